"""`surgery inspect MODEL [heads|layers]`: the pipeline behind the command (`commands.inspect` parses its options).

Reads both reference sets first (bad input fails before any model loads), measures each set with the sink
patch under a Rich progress bar, then prints the table and writes the JSON and heatmap, each whole or not
at all. `settings_from_recipe` measures as `surgery finetune` does with a recipe's `[measure]` section.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from .data.refsets import RefSet, default_harmful, default_harmless, named_refset, read_refset, sample
from .errors import InputError
from .files import write_json, writing
from .models import load_model, pick_device, pick_dtype, read_chat_template
from .progress import PROGRESS_COLUMNS
from .report.inspect import print_summary, write_heatmap
from .sink import measure_refsets, result_record
from .train.builders import build_references
from .train.recipe import load_recipe


@dataclass(frozen=True)
class Measurement:
    """What is measured and how: the reference sets (None: the built-in ones), samples drawn from each,
    tokens per sample, samples per forward, the sink position, the seed and the bootstrap resamples."""

    harmful: str | None = None
    harmless: str | None = None
    samples: int = 64
    max_length: int = 512
    batch_size: int = 8
    sink_position: int = 0
    seed: int = 0
    bootstrap: int = 1000


def settings_from_recipe(path: Path, given: dict) -> tuple[tuple[RefSet, RefSet], Measurement]:
    """(reference pools, the measurement) as `surgery finetune` measures with the recipe: its [measure] section
    and train.seed; each setting in `given` (a Measurement field that is not None) wins."""
    r = load_recipe(path)
    m = r.measure
    seed = given.get("seed") if given.get("seed") is not None else r.train.seed
    harm, safe = build_references(m, seed)
    pools = (named_refset(given["harmful"], "harmful") if given.get("harmful") else harm,
             named_refset(given["harmless"], "harmless") if given.get("harmless") else safe)
    from_recipe = Measurement(samples=m.samples or 64, max_length=m.max_length or r.train.max_length,
                              sink_position=m.sink_position, seed=seed)
    return pools, replace(from_recipe, **{k: v for k, v in given.items() if v is not None})


def reference_samples(m: Measurement, pools: tuple[RefSet, RefSet] | None) -> tuple[RefSet, RefSet]:
    """`m.samples` drawn (seeded) from each pool, or from the sets `m` names, or from the built-in ones."""
    if pools is None:
        pools = (read_refset(m.harmful, "harmful") if m.harmful else default_harmful(),
                 read_refset(m.harmless, "harmless") if m.harmless else default_harmless())
    return sample(pools[0], m.samples, m.seed), sample(pools[1], m.samples, m.seed)


def check_output_path(path: Path | None, option: str) -> None:
    if path is not None and path.is_dir():
        raise InputError(f"{option} {path}: is a folder, expected a file path")


def run_inspect(model_name: str, m: Measurement, *, view: str, top: int, console: Console, adapter: str | None = None,
                json_path: Path | None = None, plot_path: Path | None = None, device: str = "auto",
                dtype: str = "auto", chat_template: Path | None = None,
                pools: tuple[RefSet, RefSet] | None = None) -> dict:
    """Measure `model_name` (with `adapter`), print the `view` table (`heads`: the `top` heads; `layers`), and
    write the JSON and heatmap where asked; the `surgery inspect --json` record."""
    harm, safe = reference_samples(m, pools)
    check_output_path(json_path, "--json")
    check_output_path(plot_path, "--plot")
    template = read_chat_template(chat_template, "--chat-template") if chat_template else None
    dev = pick_device(device, "--device")
    dt = pick_dtype(dtype, dev, "--dtype")
    with console.status(f"loading {model_name}"):
        model, tokenizer = load_model(model_name, dt, dev, adapter, chat_template=template)
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True) as progress:
        summary = measure_refsets(model, tokenizer, harm, safe, max_length=m.max_length, batch_size=m.batch_size,
                                  sink_position=m.sink_position, device=dev, progress=progress,
                                  where="--sink-position", resamples=m.bootstrap)
    result = result_record(model_name, adapter, m.sink_position, model, harm, safe, summary)
    print_summary(console, result, view, top, m.bootstrap)
    for path, write in ((json_path, write_json), (plot_path, write_heatmap)):
        if path is not None:
            with writing(path, lambda: "this file was not written (the measurement is lost)"):
                write(path, result)
            console.print(f"wrote {path}")
    return result
