"""`surgery report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]`: the command; the work is `study.report.report_sweeps`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import fail


def report(
    sweeps: Annotated[list[Path], typer.Argument(metavar="SWEEP_DIR", help="Sweep folders (`surgery sweep --out`) or search folders (`surgery search --out`), finished or not: sweeps run at different times merge into one table.")],
    out: Annotated[Path | None, typer.Option(help="Folder for sweep.md, sweep.png (of search folders: their search.png instead), sweep.json, correlation.png and .json, answers.jsonl.gz and report.html; of one search folder also its search.md, search.json and search.png. Default: the sweep folder itself when one finished sweep is given.")] = None,
) -> None:
    """Tables and plots of one or several sweeps as one (mean ± sd over seeds, pooled 95% Wilson intervals), and Spearman's correlation between positive heads after fine-tuning and harmful score across every cell, with its p-value and N.

    A cell found in two folders keeps the later folder's. Sweeps judged by different judges are refused. A search folder's trials are its cells, its worst-case table (search.json) is printed and shown too, and report.html lists each configuration's trials in place of the grid table.

    Manual: docs/sweeps.md.
    """
    from rich.console import Console

    from ..errors import InputError
    from ..study.report import report_sweeps

    console = Console()
    try:
        folder = report_sweeps(sweeps, out, console)
    except InputError as e:
        raise fail(e) from None
    console.print(f"wrote {folder}/report.html (open it in a browser) and the tables and plots beside it")
