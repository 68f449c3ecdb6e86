"""`surgery report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]`: re-render one or several sweeps' tables and plots
as one, and measure the paper's observation across their cells; the work is `study.collect`,
`study.aggregate` and `report.sweep`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import fail


def report(
    sweeps: Annotated[list[Path], typer.Argument(metavar="SWEEP_DIR", help="Sweep folders (`surgery sweep --out`), finished or not: sweeps run at different times merge into one table.")],
    out: Annotated[Path | None, typer.Option(help="Folder for sweep.md, sweep.png, sweep.json, correlation.png. Default: the sweep folder itself when one finished sweep is given.")] = None,
) -> None:
    """Tables and plots of one or several sweeps as one (mean ± sd over seeds, pooled 95% Wilson intervals), and Spearman's correlation between positive heads after fine-tuning and harmful score across every cell, with its p-value and N.

    A cell found in two folders keeps the later folder's. Sweeps judged by different judges are refused.

    Manual: docs/sweeps.md.
    """
    import json

    from rich.console import Console

    from ..errors import InputError
    from ..files import atomic_write_text
    from ..report.sweep import correlation_md, write_sweep
    from ..report.sweep_plot import write_correlation_plot
    from ..study.aggregate import correlation
    from ..study.collect import merge_sweeps

    console = Console()
    try:
        for folder in sweeps:  # before the --out rule, which a mistyped folder would otherwise trip first
            if not folder.is_dir():
                raise InputError(f"{folder}: no such sweep folder")
        if out is None:
            if len(sweeps) > 1 or not (sweeps[0] / "sweep.json").is_file():
                raise InputError("--out: required with several sweep folders or an unfinished one (a running sweep "
                                 "owns its own sweep.json)")
            out = sweeps[0]
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder")
        merged, notes, judge = merge_sweeps(sweeps)
    except InputError as e:
        raise fail(e) from None
    for note in notes:
        console.print(f"[yellow]{note}[/]")
    judge = judge or "unknown (unfinished sweeps record no judge)"
    corr = correlation(merged["cells"])
    write_sweep(out, merged, judge, console, extra_md=correlation_md(corr, judge))
    write_correlation_plot(out / "correlation.png", merged["cells"], corr, judge)
    atomic_write_text(out / "correlation.json", json.dumps(corr, indent=1) + "\n")
    console.print(correlation_md(corr, judge).strip())
    console.print(f"wrote {out}/sweep.md, sweep.png, sweep.json, correlation.png, correlation.json")
