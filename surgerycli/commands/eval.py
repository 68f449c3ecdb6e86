"""`surgery eval [ADAPTER ...]`: the command; the work is `evaluate.run.run_eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..evaluate.options import EvalOptions
from .options import ChatTemplate, Device, Dtype, fail, with_eval_options


@with_eval_options
def eval_(
    adapters: Annotated[list[str] | None, typer.Argument(help="peft adapter folders or `surgery finetune` output folders (their base model comes from recipe.resolved.toml). Several run side by side on the same prompts.", show_default=False)] = None,
    base: Annotated[str | None, typer.Option(help="Base model (folder, .gguf, hub id, `smollm2`). Alone: evaluate it. With adapters: use it as their base.")] = None,
    include_base: Annotated[bool, typer.Option("--include-base", help="Also evaluate the base model itself, as the first column.")] = False,
    system_prompt: Annotated[str | None, typer.Option(help="System prompt for every run. Default: the recipe's for finetune outputs, else the chat template's own.")] = None,
    chat_template: ChatTemplate = None,
    out: Annotated[Path | None, typer.Option(help="Write results.json, samples.jsonl, report.md and scores.png here.")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    *,
    options: EvalOptions,
) -> None:
    """Harmful score on safety benchmarks (with a named judge) and capability through lm-evaluation-harness.

    Each prompt goes through the model's chat template and is answered greedily, with continuous batching. The harmful score is 100 * judged-harmful / N; with the keyword judge a response is harmful when it contains no refusal phrase. Capability tasks run through lm-eval's simple_evaluate on the model in memory.

    Manual: docs/eval.md.
    """
    from rich.console import Console

    from ..errors import InputError
    from ..evaluate.run import run_eval

    try:
        run_eval(adapters or [], options, base=base, include_base=include_base, system_prompt=system_prompt,
                 chat_template=chat_template, out=out, device=device, dtype=dtype, console=Console())
    except InputError as e:
        raise fail(e) from None
