"""Benchmark for `surgery search`: trials per hour with two local workers of one thread each against one worker
with two threads, side by side in one run, on this machine's CPU.

    python benchmarks/search_throughput.py [--trials 4] [--steps 10] [--limit 10] [--out bench-search]

Each side is a fresh `surgery search` of SFT on the packaged SmolLM2-135M-Instruct (unaligned: the attack's
starting point does not change the work), over the learning rate, on the demo's data (built first, untimed),
`--trials` trials of `--steps` LoRA steps each, evaluated on `--limit` held-out HarmBench prompts (16 new tokens)
and `--limit` arithmetic problems. The evaluation of the model before the attack is done once, untimed, and
copied to both sides. Printed: wall seconds of the trials, trials per hour, the ratio, and each side's peak
resident memory (the largest of its processes' peaks: per worker, what one machine's share must hold).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def search_command(out: Path, data: Path, trials: int, steps: int, limit: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "surgerycli", "search", str(ROOT / "recipes" / "demo-attack.toml"), "--out", str(out),
            "--methods", "sft", "--trials", str(trials), "--space", "train.learning_rate=1e-4:1e-3:log",
            "--workers", str(workers), "--seed", "0",
            "--set", "model.name=smollm2", "--set", f"data.benign={data / 'arithmetic_train.jsonl'}",
            "--set", f"data.harmful={data / 'harmful_pairs.jsonl'}", "--set", f"train.max_steps={steps}",
            "--set", f"measure.harmful_reference={data / 'reference_harmful.jsonl'}",
            "--set", f"measure.harmless_reference={data / 'reference_harmless.jsonl'}",
            "--set", "measure.samples=0", "--set", "monitor.every_steps=0",
            "--safety-data", f"harmbench={data / 'eval_harmful.txt'}",
            "--task-data", f"surgery_gsm8k={data / 'arithmetic_test.jsonl'}", "--limit", str(limit),
            "--max-new-tokens", "16"]


WRAP = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run(cmd: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds, and the peak resident memory of the largest process the command ran (bytes), measured in a
    wrapper process of its own so that each side's figure is its own."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAP, *cmd], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, int(done.stdout.split()[-1]) * 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("bench-search"))
    a = p.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    data = a.out / "data"
    subprocess.run([sys.executable, "-m", "surgerycli", "data", "demo", "--out", str(data)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    # the model before the attack, evaluated once (a search with --prepare-only), then given to both sides
    seed = a.out / "prepared"
    subprocess.run(search_command(seed, data, a.trials, a.steps, a.limit, 1) + ["--prepare-only"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    sides = {"1 worker x 2 threads": (1, {"OMP_NUM_THREADS": "2"}), "2 workers x 1 thread": (2, {"OMP_NUM_THREADS": "2"})}
    results = {}
    for name, (workers, extra) in sides.items():
        out = a.out / name.replace(" ", "")
        shutil.copytree(seed, out, ignore=shutil.ignore_patterns("search.db"))
        seconds, peak = run(search_command(out, data, a.trials, a.steps, a.limit, workers), {**env, **extra})
        results[name] = (seconds, peak)
    print(f"surgery search, {a.trials} trials of SFT on SmolLM2-135M ({a.steps} LoRA steps, {a.limit} prompts + "
          f"{a.limit} problems each), {os.cpu_count()} CPUs, torch threads as named:")
    base = results["1 worker x 2 threads"][0]
    for name, (seconds, peak) in results.items():
        print(f"  {name:22s} {seconds:7.1f} s  {3600 * a.trials / seconds:6.1f} trials/h  {base / seconds:5.2f}x  "
              f"peak RSS of the largest process {peak / 2**20:7.0f} MiB")


if __name__ == "__main__":
    main()
