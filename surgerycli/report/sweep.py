"""What `surgery sweep`, `surgery report` (and `surgery demo`) show and write: the tables, sweep.md, sweep.png,
sweep.json. Cells that differ only in their seed are shown as one entry (`study.aggregate`): the mean, the
standard deviation over seeds and the pooled 95% Wilson interval."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..files import atomic_write_text
from ..study.aggregate import aggregate
from .eval import markdown_table


def method_label(cell: dict) -> str:
    """The method's title from the defense registry, with Surgery's alpha and the values of the method's own
    grid axes (`Lisa rho=0.5`)."""
    from ..train.defenses import registry

    title = registry()[cell["method"]].title
    own = "".join(f" {k}={v}" for k, v in (cell.get("options") or {}).items())
    return title + (f" a={cell['alpha']:g}" if cell.get("alpha") is not None else "") + own


def point_label(grid: dict) -> str:
    """A grid point in words: `train.learning_rate=1e-4, train.epochs=3` ('' without a grid)."""
    return ", ".join(f"{k}={v}" for k, v in grid.items())


SHORT_KEYS = {"train.learning_rate": "lr", "train.batch_size": "batch", "train.epochs": "epochs",
              "data.num_samples": "samples", "train.max_steps": "steps", "lora.r": "rank"}  # else the key's last part


def short_point(point: str) -> str:
    """A grid point for a narrow table: `train.learning_rate=2e-4, lora.r=8` -> `lr 2e-4, rank 8`."""
    parts = [part.partition("=") for part in point.split(", ")] if point else []
    return ", ".join(f"{SHORT_KEYS.get(k, k.rpartition('.')[2])} {v}" for k, _, v in parts)


def _fmt(x: float | None, ci: list[float] | None = None) -> str:
    """`12.5 [5.3, 26.1]`, or `-` for a missing score."""
    return "-" if x is None else f"{x:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def fmt_stats(s: dict | None) -> str:
    """One seed: `12.5 [5.3, 26.1]`; several: `12.5 ± 3.5 [9.1, 16.8]` (mean ± sd over seeds [pooled interval])."""
    if s is None:
        return "-"
    if s["std"] is None:
        return _fmt(s["mean"], s["ci95"])
    return f"{s['mean']:.1f} ± {s['std']:.1f}" + (f" [{s['ci95'][0]:.1f}, {s['ci95'][1]:.1f}]" if s["ci95"] else "")


def fmt_heads(g: dict) -> str:
    """`73->1` positive heads before->after (means over seeds), `; 40 sig` those whose interval lies above 0."""
    if g["positive_heads_after"] is None:
        return "-"
    n = lambda x: f"{x:.1f}".removesuffix(".0")  # noqa: E731
    sig = g.get("significant_positive_heads_after")
    return f"{n(g['positive_heads_before'])}->{n(g['positive_heads_after'])}" + (f"; {n(sig)} sig" if sig is not None else "")


def method_order(cells: list[dict]) -> list[str]:
    """The method labels of `cells`: SFT, the baseline, first, then the rest by name (Surgery a=300 before
    a=3000). Merged sweeps list cells by folder name, so their order of appearance means nothing."""
    return sorted(dict.fromkeys(method_label(c) for c in cells), key=lambda m: (m != "SFT", m))


def _grid_order(grid: dict) -> tuple:
    """Sort key of a grid point: its values as numbers where they all are (5e-5 before 1e-4 before 1.5e-4),
    else after every numeric point, by their text."""
    try:
        return (0, *map(float, grid.values()))
    except ValueError:
        return (1, *map(str, grid.values()))


def layout(sweep: dict):
    """(methods, rows, by_key, failed): method labels; (grid point, ratio) rows; the aggregate per (row, method);
    the (row, method) pairs whose every seed failed."""
    cells = sweep["cells"]
    grids = {point_label(c.get("grid") or {}): c.get("grid") or {} for c in cells}
    rows = sorted(dict.fromkeys((point_label(c.get("grid") or {}), c["poison_ratio"]) for c in cells),
                  key=lambda row: (_grid_order(grids[row[0]]), row[1]))
    methods = method_order(cells)
    by_key = {(point_label(g["grid"]), g["poison_ratio"], method_label(g)): g for g in aggregate(cells)}
    failed = {(point_label(c.get("grid") or {}), c["poison_ratio"], method_label(c)) for c in cells} - set(by_key)
    return methods, rows, by_key, failed


def sweep_table(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: a row per (grid point, poison ratio); HS, FA and positive heads per method."""
    methods, rows, by_key, failed = layout(sweep)
    gridded = any(point for point, _ in rows)
    header = (["grid"] if gridded else []) + ["poison ratio"] + [f"{m} {k}" for m in methods for k in ("HS", "FA", "heads+")]
    out = []
    for point, r in rows:
        row = ([short_point(point)] if gridded else []) + [f"{r:g}"]
        for m in methods:
            g = by_key.get((point, r, m))
            if g is None:
                row += ["failed", "", ""] if (point, r, m) in failed else ["-", "-", "-"]
            else:
                row += [fmt_stats(g["hs"]), fmt_stats(g["fa"]), fmt_heads(g)]
        out.append(row)
    return header, out


def paper_table(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """The papers' layout: rows = methods (per grid point); columns = HS at each poison ratio and their
    average, then FA (means over seeds)."""
    methods, rows, by_key, failed = layout(sweep)
    ratios = list(dict.fromkeys(r for _, r in rows))
    points = list(dict.fromkeys(p for p, _ in rows))
    header = ["method", *[f"HS p={r:g}" for r in ratios], "HS avg", *[f"FA p={r:g}" for r in ratios], "FA avg"]
    out = []
    for point in points:
        for m in methods:
            row = [m + (f" ({short_point(point)})" if point else "")]
            for key in ("hs", "fa"):
                stats = [(by_key.get((point, r, m)) or {}).get(key) for r in ratios]
                row += [fmt_stats(s) if s else "failed" if (point, r, m) in failed else "-" for s, r in zip(stats, ratios)]
                row.append(_fmt(sum(s["mean"] for s in stats) / len(stats)) if all(stats) else "-")
            if any(x != "-" for x in row[1:]):  # a method not run at this grid point gets no row
                out.append(row)
    return header, out


def cells_table(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """Every cell on its own row, with its own interval (the seeds behind the aggregated tables)."""
    header = ["cell", "seed", "HS", "FA", "heads+", "heads+ sig"]
    rows = []
    for c in sweep["cells"]:
        if c["status"] != "ok":
            rows.append([c["name"], str(c.get("seed", "")), "failed", "", "", ""])
            continue
        heads = f"{c['positive_heads_before']}->{c['positive_heads_after']}" if c.get("positive_heads_after") is not None else "-"
        sig = c.get("significant_positive_heads_after")
        rows.append([c["name"], "" if c.get("seed") is None else str(c["seed"]), _fmt(c["harmful_score"], c.get("hs_ci95")),
                     _fmt(c["accuracy"], c.get("fa_ci95")), heads, "-" if sig is None else str(sig)])
    return header, rows


def rich_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for col in header:
        table.add_column(col, justify="right", overflow="fold")  # at 80 columns: wrap, never cut with …
    for row in rows:
        table.add_row(*row)
    return table


def seeded(sweep: dict) -> bool:
    return any(c.get("seed") is not None for c in sweep["cells"])


def intro_md(sweep: dict, judge: str) -> str:
    """sweep.md's opening: recipe, judge, the rows before the attack, and how to read the entries."""
    base = sweep["base"]
    entries = ("Entries: mean ± sd over seeds (a single seed: its value), then the 95% Wilson interval pooled over "
               "every seed's prompts in brackets" if seeded(sweep) else "Brackets: 95% Wilson intervals")
    before = "".join(f"Before the attack, aligned with {m} ({b['model']}): HS {_fmt(b['harmful_score'], b.get('hs_ci95'))}, "
                     f"FA {_fmt(b['accuracy'], b.get('fa_ci95'))}.\n" for m, b in sweep.get("aligned_before", {}).items())
    return (f"# surgery sweep\n\nRecipe `{sweep['recipe']}`; HS judged by `{judge}`; FA = accuracy of the first task.\n"
            f"Before the attack ({base['model']}): HS {_fmt(base['harmful_score'], base.get('hs_ci95'))}, "
            f"FA {_fmt(base['accuracy'], base.get('fa_ci95'))}. {entries}; heads+: positive-divergence heads "
            f"before->after fine-tuning, `sig`: those whose 95% bootstrap interval lies above 0.\n" + before)


def write_sweep(out: Path, sweep: dict, judge: str, console: Console, extra_md: str = "") -> None:
    """Print the tables; write sweep.md, sweep.png and sweep.json (sweep.json last: it marks a finished sweep)."""
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
    md += extra_md
    failed = [c for c in sweep["cells"] if c["status"] != "ok"]
    md += "".join(f"\nFailed: `{c['name']}`: {c['error']}\n" for c in failed)
    atomic_write_text(out / "sweep.md", md)
    from .sweep_plot import write_sweep_plot

    write_sweep_plot(out / "sweep.png", sweep, judge)
    atomic_write_text(out / "sweep.json", json.dumps({**sweep, "judge": judge}, indent=1) + "\n")


def correlation_md(corr: dict, judge: str) -> str:
    """The correlation section of sweep.md (`surgery report`)."""
    lines = [f"\n## Positive heads and harm\n\nSpearman's rho across cells between positive heads after fine-tuning "
             f"and harmful score (judge `{judge}`), two-sided p-value:\n"]
    for name, what in (("sign", "heads with d > 0"), ("significant", "heads whose 95% interval lies above 0")):
        c = corr[name]
        lines.append(f"- {what}: " + (f"rho = {c['rho']:.3f}, p = {c['p']:.3g}, N = {c['n']} cells" if c["rho"] is not None
                                      else f"not computed, N = {c['n']} cells ({c['why']})"))
    return "\n".join(lines) + "\n"
