"""Benchmark for `surgery inspect`: cost of the sink statistics three ways, side by side in one run.

    python benchmarks/inspect_memory.py [--lengths 512 1024 2048] [--repeats 5] [--device cpu] [--model smollm2]
                                        [--dtype float32]

On SmolLM2-135M-Instruct by default (--model: any folder, or a shape from benchmarks/shapes/ with random
weights), forward only, batch 1, at each length:
  patched    sink mode + capture: fused SDPA with the one-hot value channel (all per-head sink columns)
  reference  eager attention with output_attentions=True, sink columns read off the matrices
  plain      unpatched SDPA, no statistics: the floor
Time: one process, one model, the three methods interleaved round by round (so drift on a shared machine
hits all three alike), median of --repeats rounds after a warm-up. Peak memory: the rise over the memory
held before one forward, measured in a separate process per method so no allocator state leaks between
them; on CPU the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs), on CUDA
torch.cuda.max_memory_allocated. Prints a table and the ratios patched/reference and patched/plain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from modelspec import add_model_args, materialize

METHODS = ("patched", "reference", "plain")


def _cpu_rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


class PeakMemory:
    """Peak bytes above the starting level inside the block (CPU: VmHWM; CUDA: the caching allocator)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS to the current RSS
            self.start = _cpu_rss_kb("VmRSS:") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = _cpu_rss_kb("VmHWM:") * 1024 - self.start


def forward(model, method: str, ids: torch.Tensor) -> torch.Tensor | None:
    from surgerycli.patches import capture_sinks, sink_index

    mask = torch.ones_like(ids)
    if method == "plain":
        model(input_ids=ids, attention_mask=mask, use_cache=False)
        return None
    if method == "patched":
        with capture_sinks(model, mask) as state:
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            return torch.stack([state.columns[l] for l in sorted(state.columns)], 1)  # (B, L, H, T)
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True, use_cache=False)
    idx = sink_index(mask)
    return torch.stack([a[torch.arange(1), :, :, idx] for a in out.attentions], 1)  # (B, L, H, T)


def set_method(model, method: str) -> None:
    """Put a loaded model in the attention mode `method` measures."""
    from surgerycli.patches import set_sink_mode

    set_sink_mode(model, False)
    model.set_attn_implementation("eager" if method == "reference" else "sdpa")
    set_sink_mode(model, method == "patched")


def load(method: str, device: torch.device, folder: str, dtype: str):
    from transformers import AutoModelForCausalLM

    from surgerycli.models import DTYPES

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype]).to(device).eval()
    set_method(model, method)
    return model


def inputs(T: int, vocab: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(T)
    return torch.randint(100, vocab, (1, T), generator=g).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def peak_memory(method: str, lengths: list[int], device: str, folder: str, dtype: str) -> dict[int, int]:
    """Child process: peak bytes of one forward of `method` at each length (after a warm-up)."""
    dev = torch.device(device)
    model = load(method, dev, folder, dtype)
    peaks = {}
    for T in lengths:
        ids = inputs(T, model.config.vocab_size, dev)
        forward(model, method, ids)
        with PeakMemory(dev) as mem:
            forward(model, method, ids)
            sync(dev)
        peaks[T] = mem.peak
    return peaks


@torch.no_grad()
def median_times(lengths: list[int], repeats: int, device: str, folder: str, dtype: str) -> dict[tuple[str, int], float]:
    """Seconds per forward of every method, interleaved round by round on one model."""
    dev = torch.device(device)
    model = load("plain", dev, folder, dtype)
    times: dict[tuple[str, int], list[float]] = {}
    for T in lengths:
        ids = inputs(T, model.config.vocab_size, dev)
        for r in range(repeats + 1):  # round 0 warms up
            for method in METHODS[r % 3 :] + METHODS[: r % 3]:  # rotate who goes first
                set_method(model, method)
                t0 = time.perf_counter()
                forward(model, method, ids)
                sync(dev)
                if r:
                    times.setdefault((method, T), []).append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    add_model_args(p)
    p.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        peaks = peak_memory(args.child[0], args.lengths, args.device, args.child[1], args.dtype)
        print(json.dumps({str(k): v for k, v in peaks.items()}))
        return
    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        label = materialize(args.model, folder)
        for method in METHODS:
            cmd = [sys.executable, __file__, "--child", method, folder, "--device", args.device, "--dtype", args.dtype,
                   "--lengths", *map(str, args.lengths)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            for T, peak in json.loads(out.strip().splitlines()[-1]).items():
                peaks[method, int(T)] = peak
        secs = median_times(args.lengths, args.repeats, args.device, folder, args.dtype)
    gpu = f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""
    print(f"{label}, {args.dtype}, forward, batch 1, device {args.device}{gpu}, torch {torch.__version__}")
    print("| tokens | patched s | reference s | plain s | patched MiB | reference MiB | plain MiB "
          "| time patched/ref | mem patched/ref | time patched/plain |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for T in args.lengths:
        (ts, tr, tp), (ms, mr, mp) = ([d[m, T] for m in METHODS] for d in (secs, peaks))
        print(f"| {T} | {ts:.3f} | {tr:.3f} | {tp:.3f} | {ms / 2**20:.0f} | {mr / 2**20:.0f} | {mp / 2**20:.0f} "
              f"| {ts / tr:.2f} | {ms / mr:.3f} | {ts / tp:.2f} |")


if __name__ == "__main__":
    main()
