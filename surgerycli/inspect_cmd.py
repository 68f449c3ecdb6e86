"""`surgery inspect MODEL [heads|layers]`: per-head sink statistics and sink divergence of a model.

Reads both reference sets first (bad input fails before any model loads), measures each set with the
sink patch under a Rich progress bar, then prints the table and writes the JSON and heatmap atomically.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import InputError
from .refsets import RefSet, default_harmful, default_harmless, read_refset, sample


def load_refsets(harmful: str | None, harmless: str | None, n: int, seed: int) -> tuple[RefSet, RefSet]:
    harm = read_refset(harmful, is_safe=False) if harmful else default_harmful()
    safe = read_refset(harmless, is_safe=True) if harmless else default_harmless()
    return sample(harm, n, seed), sample(safe, n, seed)


def check_output_path(path: Path | None, option: str) -> None:
    if path is not None and path.is_dir():
        raise InputError(f"{option} {path}: is a folder, expected a file path")


PROGRESS_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def measure_refsets(
    model, tokenizer, harm: RefSet, safe: RefSet, *, max_length: int, batch_size: int,
    sink_position: int, device, progress: Progress, where: str = "--sink-position",
) -> dict:
    """`summarize` of both sets, measured with a progress task each (shared with `surgery finetune`)."""
    from .sinkstats import encode, measure_set, summarize

    stats = {}
    for label, refset in (("harmful", harm), ("harmless", safe)):
        ids = encode(tokenizer, refset.samples, max_length)
        task = progress.add_task(f"{label} set", total=len(ids))
        stats[label] = measure_set(
            model, ids, pad_id=tokenizer.pad_token_id, batch_size=batch_size, sink_position=sink_position,
            device=device, on_batch=lambda n, task=task: progress.advance(task, n),
        )
    try:
        return summarize(stats["harmful"], stats["harmless"])
    except ValueError as e:
        raise InputError(f"{where} {sink_position}: {e} (texts too short)") from None


def result_record(
    model_name: str, adapter: str | None, sink_position: int, model, harm: RefSet, safe: RefSet, summary: dict
) -> dict:
    """The `surgery inspect --json` schema."""
    cfg = model.config.get_text_config()
    return {
        "model": model_name,
        "adapter": adapter,
        "sink_position": sink_position,
        "num_layers": cfg.num_hidden_layers,
        "num_heads": cfg.num_attention_heads,
        "harmful": {"path": harm.path, **summary["harmful"]},
        "harmless": {"path": safe.path, **summary["harmless"]},
        "divergence": summary["divergence"],
        "positive_heads": summary["positive_heads"],
        "negative_heads": summary["negative_heads"],
    }


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
) -> dict:
    from .models import load_model, pick_device, pick_dtype
    from .report import heads_table, layers_table, write_heatmap, write_json

    harm, safe = load_refsets(harmful, harmless, samples, seed)
    check_output_path(json_path, "--json")
    check_output_path(plot_path, "--plot")
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    with console.status(f"loading {model_name}"):
        model, tokenizer = load_model(model_name, dt, dev, adapter)
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True) as progress:
        summary = measure_refsets(
            model, tokenizer, harm, safe, max_length=max_length, batch_size=batch_size,
            sink_position=sink_position, device=dev, progress=progress,
        )
    result = result_record(model_name, adapter, sink_position, model, harm, safe, summary)
    cfg = model.config.get_text_config()
    console.print(heads_table(result, top) if view == "heads" else layers_table(result))
    console.print(
        f"[red]{result['positive_heads']} positive[/] / [blue]{result['negative_heads']} negative[/] heads "
        f"of {cfg.num_hidden_layers * cfg.num_attention_heads} "
        f"({result['harmful']['n_samples']} harmful, {result['harmless']['n_samples']} harmless samples)"
    )
    if json_path is not None:
        write_json(json_path, result)
        console.print(f"wrote {json_path}")
    if plot_path is not None:
        write_heatmap(plot_path, result)
        console.print(f"wrote {plot_path}")
    return result
