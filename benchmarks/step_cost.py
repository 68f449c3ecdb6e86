"""Benchmark for `surgery finetune`: cost of one optimizer step, SFT against Surgery two ways, in one run.

    python benchmarks/step_cost.py [--lengths 512 1024] [--steps 2] [--device cpu] [--model smollm2]
                                   [--dtype float32] [--load-in-4bit] [--loss chunked]

SmolLM2-135M-Instruct by default (--model: any folder, or a shape from benchmarks/shapes/ with random
weights), LoRA r=16 on every linear layer (QLoRA NF4 with --load-in-4bit, as `surgery finetune` loads
it), no gradient checkpointing; a benign batch of 4 sequences and one harmful plus one harmless
reference sequence, all `T` tokens long:
  sft        the SFT loss alone, as `surgery finetune` computes it with --loss (one or more):
             chunked  train.fused_cross_entropy off CUDA: chunked cross-entropy over the hidden states,
                      no (B, T, vocab) logits tensor (the default)
             liger    train.fused_cross_entropy on CUDA with liger-kernel: Liger's fused kernel
             plain    the model's own loss (full fp32 logits)
  surgery    the path `surgery finetune` takes: the SFT forward and backward, then one batched forward
             of both reference samples through the sink patch and its backward (sequential)
  joint      as `surgery`, but one backward of sft + alpha * sink (both graphs alive at once)
  reference  the reference code's way: eager attention for every forward, output_attentions=True,
             separate harmful and harmless forwards, one joint backward, the model's own SFT loss
Each (method, length) runs in its own process (no allocator state shared): one warm-up step, then the
median seconds of --steps steps, and the peak memory over them (CPU: the process's VmHWM, reset through
/proc/self/clear_refs after the warm-up; CUDA: torch.cuda.max_memory_allocated). On CPU one more step runs
under the profiler to give the peak of live tensor bytes as well ("live": what the CUDA figure measures;
RSS adds what glibc keeps mapped after a free, which varies from run to run). Prints a table and the
ratios surgery/sft and surgery/reference.
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

METHODS = ("sft", "surgery", "joint", "reference")
LOSSES = ("chunked", "liger", "plain")
ALPHA = 300.0


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS := current RSS


def reference_sink_loss(model, harmful: torch.Tensor, harmless: torch.Tensor) -> torch.Tensor:
    """mean relu(d_h) from eager attention matrices; inputs (1, T), unpadded, sink at position 0."""
    means = []
    for ids in (harmful, harmless):
        out = model(input_ids=ids, output_attentions=True, use_cache=False)
        means.append(torch.stack([a[0, :, 1:, 0].mean(-1) for a in out.attentions]))  # (L, H)
    return torch.relu(means[0] - means[1]).mean()


def resting_bytes(model, optimizer) -> int:
    """Bytes of the tensors alive between steps: weights, buffers, optimizer state (gradients are set to None)."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def live_peak_cpu(run_step, model, optimizer) -> int:
    """Peak live tensor bytes during one step on CPU: the resting tensors plus the profiler's running total of
    what the step allocates and has not yet freed (its memory events, one per allocation and free)."""
    import os

    from torch.profiler import ProfilerActivity, profile

    rest = resting_bytes(model, optimizer)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_step()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return rest + max(totals, default=0)


def make_step(method: str, model, benign: torch.Tensor, harmful: torch.Tensor, harmless: torch.Tensor, loss: str):
    from surgerycli.patches import capture_sinks, set_sink_mode, sink_per_sample
    from surgerycli.train.defenses.surgery import SinkRegularizer, sink_divergence, sink_loss

    reg = SinkRegularizer(alpha=ALPHA, sink_position=0, harmful=[harmful[0].tolist()],
                          harmless=[harmless[0].tolist()], k=1, pad_id=0, seed=0)
    set_sink_mode(model, False)
    model.set_attn_implementation("eager" if method == "reference" else "sdpa")
    set_sink_mode(model, method in ("surgery", "joint"))

    def sft() -> torch.Tensor:
        if loss == "plain" or method == "reference":
            return model(input_ids=benign, labels=benign, use_cache=False).loss
        from surgerycli.train.loss import causal_lm_loss

        return causal_lm_loss(model, {"input_ids": benign, "attention_mask": torch.ones_like(benign), "labels": benign},
                              use_liger=loss == "liger")

    def step() -> None:
        if method == "sft":
            sft().backward()
        elif method == "surgery":
            sft().backward()
            reg.backward_step(model, 0, 1.0, torch.Tensor.backward)
        elif method == "joint":
            batch = reg.batch(0)
            with capture_sinks(model, batch["attention_mask"]) as state:  # no checkpointing: may close early
                model(**batch, use_cache=False)
                stats = sink_per_sample(state.columns, batch["attention_mask"], state.sink_index)
            (sft() + ALPHA * sink_loss(sink_divergence(stats, 1))).backward()
        else:
            (sft() + ALPHA * reference_sink_loss(model, harmful, harmless)).backward()

    return step


def measure(method: str, T: int, steps: int, folder: str, device: str, dtype: str, four_bit: bool, loss: str) -> dict:
    """Child process: seconds per optimizer step (median) and peak memory of `method` at `T` tokens."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from surgerycli.models import DTYPES, quantization_kwargs

    dev = torch.device(device)
    torch.manual_seed(0)
    if four_bit:  # as `surgery finetune` loads it: NF4 + double quantization, compute in dtype
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype], **quantization_kwargs(DTYPES[dtype], dev))
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype]).to(dev)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM")).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(T)
    benign, harmful, harmless = (torch.randint(100, model.config.vocab_size, (n, T), generator=g).to(dev)
                                 for n in (4, 1, 1))
    step = make_step(method, model, benign, harmful, harmless, loss)

    def run_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        step()
        optimizer.step()

    times = []
    for i in range(steps + 1):  # step 0 warms up and creates the optimizer state
        if i == 1:
            reset_peak(dev)
        t0 = time.perf_counter()
        run_step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    peak = peak_bytes(dev)
    live = peak if dev.type == "cuda" else live_peak_cpu(run_step, model, optimizer)
    return {"seconds": statistics.median(times), "peak": peak, "live": live}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--load-in-4bit", action="store_true", help="QLoRA: bitsandbytes NF4 base weights")
    p.add_argument("--loss", nargs="+", choices=LOSSES, default=["chunked"],
                   help="sft, surgery, joint: the SFT loss, each given one a row (reference: always the model's own)")
    add_model_args(p)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--child", nargs=3, metavar=("METHOD", "T", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        method, T, folder = args.child
        print(json.dumps(measure(method, int(T), args.steps, folder, args.device, args.dtype, args.load_in_4bit,
                                 args.loss[0])))
        return
    runs = [(m, loss) for m in args.methods for loss in (["plain"] if m == "reference" else args.loss)]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        label = materialize(args.model, folder, torch.bfloat16 if args.load_in_4bit else torch.float32)
        for T in args.lengths:
            for method, loss in runs:
                cmd = [sys.executable, __file__, "--child", method, str(T), folder, "--steps", str(args.steps),
                       "--device", args.device, "--dtype", args.dtype, "--loss", loss]
                cmd += ["--load-in-4bit"] * args.load_in_4bit
                child = subprocess.run(cmd, capture_output=True, text=True)
                if child.returncode:
                    sys.exit(f"{method} ({loss} loss) at {T} tokens failed:\n{child.stderr[-4000:]}")
                r = results[method, loss, T] = json.loads(child.stdout.strip().splitlines()[-1])
                print(f"  {method:9s} {loss:7s} T={T}: {r['seconds']:.2f} s, {r['peak'] / 2**30:.2f} GiB peak, "
                      f"{r['live'] / 2**30:.2f} GiB live", file=sys.stderr, flush=True)
    print_results(args, label, results)


def print_results(args, label: str, results: dict) -> None:
    gpu = f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""
    print(f"{label}, {'QLoRA NF4' if args.load_in_4bit else 'LoRA'} r=16, {args.dtype}, benign batch 4 + 1 harmful "
          f"+ 1 harmless reference, device {args.device}{gpu}, torch {torch.__version__}, median of {args.steps} steps")
    peak_name = "peak GiB" if args.device.startswith("cuda") else "peak RSS GiB"
    print(f"| tokens | method | SFT loss | s/step | {peak_name} | live GiB |")
    print("|---:|---|---|---:|---:|---:|")
    for (method, loss, T), r in results.items():
        print(f"| {T} | {method} | {loss} | {r['seconds']:.2f} | {r['peak'] / 2**30:.2f} | {r['live'] / 2**30:.2f} |")
    for T in args.lengths:
        for loss in args.loss:
            s = {m: results.get((m, "plain" if m == "reference" else loss, T)) for m in args.methods}
            for a, b in (("surgery", "sft"), ("surgery", "reference"), ("joint", "sft")):
                if s.get(a) and s.get(b):
                    print(f"T={T} {loss} loss, {a}/{b}: time {s[a]['seconds'] / s[b]['seconds']:.2f}, peak memory "
                          f"{s[a]['peak'] / s[b]['peak']:.2f}, live memory {s[a]['live'] / s[b]['live']:.2f}")


if __name__ == "__main__":
    main()
