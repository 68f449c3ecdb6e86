#!/usr/bin/env bash
# The robustness study on the embedded SmolLM2-135M-Instruct (docs/study.md): where does Surgery help?
#   bash studies/smollm2.sh scan       # SFT alone over the learning rate at poison 0.1: where the attack breaks alignment
#   bash studies/smollm2.sh main       # sft, surgery alpha 300 and 3000 x lr 1e-4, 2e-4, 5e-4 x seeds 0, 1 at poison 0.1
#   bash studies/smollm2.sh baselines  # lisa, safeinstr on the same cells
#   bash studies/smollm2.sh poison     # every method again at poison 0.2
#   bash studies/smollm2.sh paper      # the paper's regime: full fine-tuning, lr 5e-6 (and 5e-5), batch 10, 5 epochs,
#                                      # alpha 300, model-written attack answers; sft, surgery x poison 0, 0.1, 0.2
#   bash studies/smollm2.sh written    # the LoRA boundary cells (lr 2e-4, poison 0.1 and 0.2) with model-written
#                                      # answers: sft, surgery (alpha 300; ALPHAS=3000 METHODS=surgery adds the
#                                      # LoRA study's other alpha), lisa, safeinstr, vaccine, booster
#   bash studies/smollm2.sh worst      # the worst case: `surgery search` per configuration (sft, surgery alpha 300
#                                      # and 3000, lisa, safeinstr, vaccine, booster, antidote, safelora, and the
#                                      # chains surgery+antidote (both alphas) and lisa+antidote) over lr 2e-5..1e-3
#                                      # (log), poison 0.05..0.3, epochs 1..4, LoRA rank 8..32; 12 trials each, the
#                                      # floor 0.8, each worst trial confirmed on seeds 0, 1, 2; model-written answers;
#                                      # METHODS narrows it (in its order), TRIALS and CONFIRM (a seed list) shorten it,
#                                      # and a rerun resumes (the studies live in $OUT/worst/search.db)
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
# 128 new tokens: the attack's max_length (128) cuts the rest; a rerun reuses the answers (5 min on 2 cores)
grep -q harmful_written "$D/manifest.json" 2>/dev/null || $SURGERY data demo --out "$D" --written-tokens 128
W=$D/harmful_written.jsonl
REFS=(--set "measure.harmful_reference=$D/reference_harmful.jsonl" --set "measure.harmless_reference=$D/reference_harmless.jsonl")
COMMON=(recipes/demo-attack.toml
  --align-recipe recipes/demo-align.toml --align-set "data.benign=$D/alignment_mix.jsonl"
  --align-set "measure.harmful_reference=$D/reference_harmful.jsonl" --align-set "measure.harmless_reference=$D/reference_harmless.jsonl"
  --set "data.benign=$D/arithmetic_train.jsonl" --set "data.harmful=$D/harmful_pairs.jsonl" "${REFS[@]}"
  --set "lisa.alignment_data=$D/refusal_pairs.jsonl" --set "safeinstr.safety_data=$D/refusal_pairs.jsonl"
  --set lisa.alignment_steps=5 --set lisa.finetune_steps=45 --set monitor.every_steps=0
  --safety-data "harmbench=$D/eval_harmful.txt" --task-data "surgery_gsm8k=$D/arithmetic_test.jsonl"
  --limit 100 --max-new-tokens 48)
# The authors' script (Lslland/Surgery script/finetune/surgery_poison_ratio.sh): full fine-tuning, lr 5e-6, 10 per
# device, 5 epochs, warmup_ratio 0.1 with the "constant" schedule (which ignores warmup in transformers, as there),
# alpha 300, sink position 0. One full step of SmolLM2 at batch 10 costs ~15 s on one core, so each cell trains on
# PAPER_SAMPLES (100: 50 steps) instead of 1000 samples; lr, batch, epochs, alpha and ratios are the authors'.
PAPER=(--set lora.enabled=false --set train.batch_size=10 --set train.epochs=5 --set train.warmup_ratio=0.1
  --set train.lr_scheduler=\"constant\" --set "data.num_samples=${PAPER_SAMPLES:-100}" --set train.save_steps=10
  --set "data.harmful=$W")
USER_LRS=${LRS:-}
USER_ALPHAS=${ALPHAS:-}
LRS=${LRS:-1e-4,2e-4,5e-4}
SEEDS=${SEEDS:-0,1}
ALPHAS=${ALPHAS:-300,3000}
case "${1:-}" in
  scan) $SURGERY sweep "${COMMON[@]}" --out "$OUT/sweep" --methods sft --poison-ratios 0.1 --seeds 0 \
          --grid train.learning_rate=5e-5,1e-4,1.5e-4,2e-4 ;;
  main) $SURGERY sweep "${COMMON[@]}" --out "$OUT/sweep" --methods "${METHODS:-sft,surgery}" --alphas "$ALPHAS" --poison-ratios 0.1 --seeds "$SEEDS" \
          --grid "train.learning_rate=$LRS" ;;
  baselines) $SURGERY sweep "${COMMON[@]}" --out "$OUT/sweep" --methods "${METHODS:-lisa,safeinstr}" --poison-ratios 0.1 --seeds "$SEEDS" \
          --grid "train.learning_rate=$LRS" ;;
  poison) $SURGERY sweep "${COMMON[@]}" --out "$OUT/sweep" --methods "${METHODS:-sft,surgery,lisa,safeinstr}" --alphas "$ALPHAS" \
          --poison-ratios 0.2 --seeds "$SEEDS" --grid "train.learning_rate=$LRS" ;;
  paper) $SURGERY sweep "${COMMON[@]}" --out "$OUT/paper" "${PAPER[@]}" --methods "${METHODS:-sft,surgery}" \
          --alphas 300 --poison-ratios "${RATIOS:-0,0.1,0.2}" --seeds "$SEEDS" --grid "train.learning_rate=${USER_LRS:-5e-6,5e-5}" ;;
  written) $SURGERY sweep "${COMMON[@]}" --out "$OUT/written" --set "data.harmful=$W" --align-set "booster.harmful_data=$W" \
          --methods "${METHODS:-sft,surgery,lisa,safeinstr,vaccine,booster}" --alphas "${USER_ALPHAS:-300}" --poison-ratios "${RATIOS:-0.1,0.2}" \
          --seeds "$SEEDS" --grid "train.learning_rate=${USER_LRS:-2e-4}" ;;
  worst) $SURGERY search "${COMMON[@]}" --out "$OUT/worst" --set "data.harmful=$W" --align-set "booster.harmful_data=$W" \
          --methods "${METHODS:-sft,surgery,lisa,safeinstr,vaccine,booster,antidote,safelora,surgery+antidote,lisa+antidote}" \
          --alphas "${USER_ALPHAS:-300,3000}" \
          --trials "${TRIALS:-12}" --space train.learning_rate=2e-5:1e-3:log --space data.poison_ratio=0.05:0.3 \
          --space train.epochs=1:4 --space lora.r=8:32:int --floor 0.8 --seed 0 --confirm-seeds "${CONFIRM:-0,1,2}" \
          --workers "${WORKERS:-1}" ;;
  *) echo "usage: bash studies/smollm2.sh scan|main|baselines|poison|paper|written|worst" >&2; exit 2 ;;
esac
