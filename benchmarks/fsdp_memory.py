"""Benchmark for `surgery finetune` under several processes: DDP against FSDP2, side by side in one run.

    python benchmarks/fsdp_memory.py [--model smollm2] [--nproc 2] [--steps 3] [--method sft]

Full fine-tuning (AdamW, the recipes' optimizer) of --model on arithmetic rows, batch 2 per process,
sequences of up to 128 tokens, under `torchrun --nproc-per-node N -m surgerycli finetune` twice: plain (DDP)
and with `--set trainer.fsdp="full_shard"` (FSDP2; on CPU through gloo, as `surgery finetune` runs it).
Each run's summary.json gives, for rank 0:
  held     bytes of weights and AdamW states the rank holds after training (DTensor shards under FSDP2):
           what sharding divides by N; 16 bytes per parameter under DDP in fp32
  peak     the process's peak memory (CPU: its maximum RSS, which also counts the whole model loaded once
           before it is sharded, the libraries and the activations; CUDA: torch.cuda.max_memory_allocated)
  s/step   training wall time over the steps
Prints a table and the ratios fsdp/ddp.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from modelspec import add_model_args, materialize  # noqa: E402

RECIPE = """
[model]
name = "{model}"
[lora]
enabled = false
[data]
benign = "{data}"
benign_format = "gsm8k"
poison_ratio = 0.0
num_samples = {samples}
[measure]
samples = 0
harmful_reference = "{harm}"
harmless_reference = "{safe}"
[defense]
method = "{method}"
[train]
batch_size = 2
max_length = 128
max_steps = {steps}
save_steps = 100000
logging_steps = 1
learning_rate = 1e-5
gradient_checkpointing = false
[trainer]
optim = "adamw_torch"
"""


def run(recipe: Path, out: Path, nproc: int, *sets: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "surgerycli", "finetune", str(recipe), "--output", str(out)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--method", default="sft", help="sft or surgery (its reference pass through the root)")
    args = parser.parse_args()

    from surgerycli.data.demo import OPENINGS, REFUSALS, arithmetic, donotanswer_prompts, pairs

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        label = materialize(args.model, str(tmp / "model"))
        rows = arithmetic(2 * args.nproc * args.steps, 0)
        (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        prompts = donotanswer_prompts()[:8]
        for name, templates in (("harm", OPENINGS), ("safe", REFUSALS)):
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs(prompts, templates, random.Random(0))))
        recipe = tmp / "bench.toml"
        recipe.write_text(RECIPE.format(model=tmp / "model", data=tmp / "data.jsonl", samples=len(rows),
                                        harm=tmp / "harm.jsonl", safe=tmp / "safe.jsonl", method=args.method,
                                        steps=args.steps))
        results = {"ddp": run(recipe, tmp / "ddp", args.nproc),
                   "fsdp2": run(recipe, tmp / "fsdp", args.nproc, 'trainer.fsdp="full_shard"')}
    print(f"{label}, full fine-tuning ({args.method}), AdamW, {args.nproc} processes, batch 2 each, {args.steps} steps")
    print(f"{'engine':8} {'held MiB':>10} {'peak MiB':>10} {'s/step':>8}")
    for name, s in results.items():
        assert s["strategy"] == ("ddp" if name == "ddp" else "fsdp2"), s["strategy"]
        print(f"{name:8} {s['held_bytes_per_rank'] / 2**20:10.1f} {s['peak_memory_bytes'] / 2**20:10.1f} "
              f"{s['wall_time_s'] / s['steps']:8.2f}")
    d, f = results["ddp"], results["fsdp2"]
    print(f"fsdp2/ddp: held {f['held_bytes_per_rank'] / d['held_bytes_per_rank']:.3f}, "
          f"peak {f['peak_memory_bytes'] / d['peak_memory_bytes']:.3f}, "
          f"time {(f['wall_time_s'] / f['steps']) / (d['wall_time_s'] / d['steps']):.2f}")


if __name__ == "__main__":
    main()
