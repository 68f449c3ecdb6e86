#!/usr/bin/env bash
# The robustness study on the embedded SmolLM2-135M-Instruct (README, "The study"): where does Surgery help?
#   bash studies/smollm2.sh scan       # SFT alone over the learning rate at poison 0.1: where the attack breaks alignment
#   bash studies/smollm2.sh main       # sft, surgery alpha 300 and 3000 x lr 1e-4, 2e-4, 5e-4 x seeds 0, 1 at poison 0.1
#   bash studies/smollm2.sh baselines  # lisa, safeinstr on the same cells
#   bash studies/smollm2.sh poison     # every method again at poison 0.2
#   surgery report study-out/sweep --out study-out/report
# Every stage writes into one sweep folder (study-out/sweep): the alignment and the "before the attack" row are
# done once, a cell shared by two stages runs once, and an interrupted stage resumes where it stopped.
# Lisa runs its authors' 1:9 split scaled to the 50-step attack (5 + 45 steps), as in the demo.
# Offline, CPU. Set STUDY_OUT to write elsewhere, SURGERY to use another `surgery` command; LRS, SEEDS, METHODS
# and ALPHAS narrow a stage (the 2026-11-25/26 runs took the four stages in narrowed pieces, e.g. `SEEDS=1
# METHODS=surgery LRS=5e-4 ... main`; the cells are the same as the four stages' whole: 62 of them).
set -euo pipefail
OUT=${STUDY_OUT:-study-out}
SURGERY=${SURGERY:-surgery}
D=$OUT/data
[ -f "$D/manifest.json" ] || $SURGERY data demo --out "$D"
REFS=(--set "measure.harmful_reference=$D/reference_harmful.jsonl" --set "measure.harmless_reference=$D/reference_harmless.jsonl")
COMMON=(recipes/demo-attack.toml --out "$OUT/sweep"
  --align-recipe recipes/demo-align.toml --align-set "data.benign=$D/alignment_mix.jsonl"
  --align-set "measure.harmful_reference=$D/reference_harmful.jsonl" --align-set "measure.harmless_reference=$D/reference_harmless.jsonl"
  --set "data.benign=$D/arithmetic_train.jsonl" --set "data.harmful=$D/harmful_pairs.jsonl" "${REFS[@]}"
  --set "lisa.alignment_data=$D/refusal_pairs.jsonl" --set "safeinstr.safety_data=$D/refusal_pairs.jsonl"
  --set lisa.alignment_steps=5 --set lisa.finetune_steps=45 --set monitor.every_steps=0
  --safety-data "harmbench=$D/eval_harmful.txt" --task-data "surgery_gsm8k=$D/arithmetic_test.jsonl"
  --limit 100 --max-new-tokens 48)
LRS=${LRS:-1e-4,2e-4,5e-4}
SEEDS=${SEEDS:-0,1}
ALPHAS=${ALPHAS:-300,3000}
case "${1:-}" in
  scan) $SURGERY sweep "${COMMON[@]}" --methods sft --poison-ratios 0.1 --seeds 0 \
          --grid train.learning_rate=5e-5,1e-4,1.5e-4,2e-4 ;;
  main) $SURGERY sweep "${COMMON[@]}" --methods "${METHODS:-sft,surgery}" --alphas "$ALPHAS" --poison-ratios 0.1 --seeds "$SEEDS" \
          --grid "train.learning_rate=$LRS" ;;
  baselines) $SURGERY sweep "${COMMON[@]}" --methods "${METHODS:-lisa,safeinstr}" --poison-ratios 0.1 --seeds "$SEEDS" \
          --grid "train.learning_rate=$LRS" ;;
  poison) $SURGERY sweep "${COMMON[@]}" --methods "${METHODS:-sft,surgery,lisa,safeinstr}" --alphas "$ALPHAS" \
          --poison-ratios 0.2 --seeds "$SEEDS" --grid "train.learning_rate=$LRS" ;;
  *) echo "usage: bash studies/smollm2.sh scan|main|baselines|poison" >&2; exit 2 ;;
esac
