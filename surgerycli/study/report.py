"""`surgery sweep`, `surgery report` and `surgery demo`: a sweep's tables printed, and sweep.md, sweep.png,
sweep.json (and for `surgery report` correlation.png and correlation.json) written into its folder. Of search
folders, `surgery report` prints and shows their worst-case tables (from search.json) and their search.png instead
of sweep.png, and of one search folder writes search.md, search.json and search.png beside its report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.console import Console

from ..errors import InputError
from ..files import atomic_write, atomic_write_text, read_json, write_json, writing
from ..report.eval import markdown_table
from ..report.html import table_html, write_report_html
from .answers import ANSWERS, answers_table, evidence, gather, write_answers
from .aggregate import correlation
from .collect import merge_sweeps, relative_paths
from .plots import write_correlation_plot, write_sweep_plot
from .search_tables import print_results, results_table, search_md, trials_table
from .tables import cells_table, correlation_md, intro_md, paper_table, rich_table, seeded, sweep_table


def write_sweep(out: Path, sweep: dict, judge: str, console: Console, extra_md: str = "", source=None,
                base_folder: Path | None = None, plots: list[Path] | None = None, title: str = "surgery sweep",
                sections: list[tuple[str, str]] = ()) -> None:
    """Print the tables; write sweep.md, sweep.png, the answers (answers.jsonl.gz) with what they say beside the
    scores, report.html, and sweep.json (last: it marks a finished sweep). `source(cell)`: the folder a cell's
    answers are in (default `out`); `base_folder`: where the model before the attack was evaluated (default `out`);
    `plots`: the pictures to show instead of sweep.png (a search's search.png), none drawn nor the grid table on
    the page; `title` and `sections` (heading, table html): the page's, the sections before the sweep's tables."""
    rows = gather(sweep["cells"], source or (lambda c: out), base_folder or out)
    found = evidence(rows, judge)
    several = " (mean ± sd over seeds)" if seeded(sweep) else ""
    brackets = "pooled 95% Wilson interval over seeds" if seeded(sweep) else "95% Wilson interval"
    console.print(rich_table(f"HS: harmful score, judge {judge} (lower is safer); FA: task accuracy %{several}; "
                             f"[{brackets}]; heads+: positive heads before->after; sig: interval above 0",
                             *sweep_table(sweep)))
    console.print(rich_table(f"The papers' layout: HS (judge {judge}) and FA per poison ratio, and their averages",
                             *paper_table(sweep)))
    md = (intro_md(sweep, judge) + "\n" + markdown_table(*sweep_table(sweep))
          + f"\n## The papers' layout\n\nHS judged by `{judge}`; FA = accuracy of the first task; average over the "
          f"poison ratios.\n\n" + markdown_table(*paper_table(sweep)))
    if seeded(sweep) or any(c.get("grid") for c in sweep["cells"]):
        md += "\n## Every cell\n\n" + markdown_table(*cells_table(sweep))
    answers = answers_table(found, judge)
    if rows:
        md += ("\n## The answers\n\nWhat each cell's answers are beside its score (answers.jsonl.gz holds them, "
               "report.html shows them): the share that is empty, repetitive or gibberish (`surgery eval`'s manual "
               "defines them), and each other judge's score (`surgery judge`).\n\n" + markdown_table(*answers[:2]))
    md += extra_md
    failed = [c for c in sweep["cells"] if c["status"] != "ok"]
    md += "".join(f"\nFailed: `{c['name']}`: {c['error']}\n" for c in failed)
    atomic_write_text(out / "sweep.md", md)
    if plots is None:
        write_sweep_plot(out / "sweep.png", sweep, judge)
    if rows:
        write_answers(out / ANSWERS, rows)
    cells = cells_table(sweep)
    write_report_html(out / "report.html", title, intro_md(sweep, judge).split("\n", 2)[2].strip(),
                      # a search's trials are no grid: its sections' trial tables stand in for the sparse grid table
                      [*sections, *([] if plots is not None else [("Harmful score and task accuracy",
                                                                   table_html(*sweep_table(sweep)))]),
                       ("Every cell (click one for its answers)", table_html(*cells, [r[0] for r in cells[1]])),
                       ("The answers, per cell", table_html(*answers))],
                      [*(plots if plots is not None else [out / "sweep.png"]), out / "correlation.png"], rows)
    write_json(out / "sweep.json", {**sweep, "judge": judge, "answers": found})


def report_sweeps(folders: list[Path], out: Path | None, console: Console) -> Path:
    """`surgery report`: the folders' cells merged into one sweep, its tables, plots and the heads-harm
    correlation written into `out` (default: the one finished sweep folder given); the folder written."""
    for folder in folders:  # before the --out rule, which a mistyped folder would otherwise trip first
        if not folder.is_dir():
            raise InputError(f"{folder}: no such sweep folder")
    if out is None:
        if len(folders) > 1 or not (folders[0] / "sweep.json").is_file():
            raise InputError("--out: required with several sweep folders or an unfinished one (a running sweep "
                             "owns its own sweep.json)")
        out = folders[0]
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    merged, notes, judge = merge_sweeps(folders, out)
    for note in notes:
        console.print(f"[yellow]{note}[/]")
    judge = judge or "unknown (unfinished sweeps record no judge)"
    corr = correlation(merged["cells"])
    with writing(out, lambda: "the sweep folders read are unchanged; each report file is whole or absent"):
        write_correlation_plot(out / "correlation.png", merged["cells"], corr, judge)  # before report.html takes it
        sections, plots = report_searches(folders, out, console)
        write_sweep(out, merged, judge, console, extra_md=correlation_md(corr, judge),
                    source=lambda c: out / c["sweep"], base_folder=folders[0], plots=plots,
                    title="surgery search" if plots is not None else "surgery sweep", sections=sections)
        atomic_write_text(out / "correlation.json", json.dumps(corr, indent=1) + "\n")
    console.print(correlation_md(corr, judge).strip())
    return out


def report_searches(folders: list[Path], out: Path,
                    console: Console) -> tuple[list[tuple[str, str]], list[Path] | None]:
    """Of the search folders among `folders` (those with search.json): their worst-case tables printed, and
    (report.html's sections for them, the pictures to show instead of sweep.png: their search.png, or None when a
    folder is a sweep). One search folder reported elsewhere gets its search.md, .json (paths relative to `out`)
    and search.png there too."""
    searches = [f for f in folders if (f / "search.json").is_file()]
    records = [relative_paths(read_json(f / "search.json", "a search record"), out.resolve()) for f in searches]
    for record in records:
        print_results(record, console)
    sections = []
    for f, r in zip(searches, records):
        sections.append((f"Worst case per configuration ({f.name}; judge {r['judge']}, floor {r['floor']:g})",
                         table_html(*results_table(r["configurations"]))))
        sections += [(f"{c['label']}: trial by trial ({f.name}; click one for its answers)",
                      table_html(*trials_table(c), [t["name"] for t in c["trials"]])) for c in r["configurations"]]
    if len(folders) == 1 and searches and out.resolve() != folders[0].resolve():
        atomic_write_text(out / "search.md", search_md(records[0]))
        write_json(out / "search.json", records[0])
        if (folders[0] / "search.png").is_file():
            atomic_write(out / "search.png", lambda tmp: shutil.copyfile(folders[0] / "search.png", tmp))
    # searches' trials are no grid over the poison ratio: a panel per trial would say nothing; search.png does
    pictures = [(out if len(folders) == 1 else f) / "search.png" for f in searches]
    return sections, pictures if len(searches) == len(folders) else None
