"""The tables of `surgery sweep`, `surgery report` (and `surgery demo`): a sweep's cells as rows and columns,
labelled, and sweep.md's text. Cells that differ only in their seed are shown as one entry
(`study.aggregate`): the mean, the standard deviation over seeds and the pooled 95% Wilson interval.
`study.report` prints and writes them; `study.plots` draws the same layout."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..evaluate.stats import percent_interval
from ..train.defenses import registry
from .aggregate import SCORES, aggregate
from .grid import parts


def method_label(cell: dict) -> str:
    """The method's title from the defense registry (a chain's titles joined by +), with Surgery's alpha and the
    values of the method's own grid axes (`Lisa rho=0.5`)."""
    alpha = f" a={cell['alpha']:g}" if cell.get("alpha") is not None else ""
    options = cell.get("options") or {}

    def own(name: str) -> str:  # a defense alone keys its axes bare (`rho`), a chain by section (`lisa.rho`)
        return "".join(f" {k.rpartition('.')[2]}={v}" for k, v in options.items()
                       if k.partition(".")[0] == name or (name == cell["method"] and "." not in k))

    return " + ".join(registry()[name].title + (alpha if name == "surgery" else "") + own(name)
                      for name in parts(cell["method"]).values())


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


def fmt_score(record: dict, score: str) -> str:
    """A cell's (or a model's before the attack) HS or FA with its interval, from its counts where it has them."""
    value, n_key, ci_key = SCORES[score]
    x = record.get(value)
    return _fmt(x, None if x is None else percent_interval(x, record.get(n_key), record.get(ci_key)))


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
        rows.append([c["name"], "" if c.get("seed") is None else str(c["seed"]), fmt_score(c, "hs"),
                     fmt_score(c, "fa"), heads, "-" if sig is None else str(sig)])
    return header, rows


def rich_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    """The table as Rich prints it; text, never markup ("[pooled 95% ...]" would be read as a style and vanish)."""
    table = Table(title=escape(title))
    for col in header:
        table.add_column(escape(col), justify="right", overflow="fold")  # at 80 columns: wrap, never cut with …
    for row in rows:
        table.add_row(*map(escape, row))
    return table


def seeded(sweep: dict) -> bool:
    return any(c.get("seed") is not None for c in sweep["cells"])


def intro_md(sweep: dict, judge: str) -> str:
    """sweep.md's opening: recipe, judge, the rows before the attack, and how to read the entries."""
    base = sweep["base"]
    entries = ("Entries: mean ± sd over seeds (a single seed: its value), then the 95% Wilson interval pooled over "
               "every seed's prompts in brackets" if seeded(sweep) else "Brackets: 95% Wilson intervals")
    before = "".join(f"Before the attack, aligned with {m} ({b['model']}): HS {fmt_score(b, 'hs')}, "
                     f"FA {fmt_score(b, 'fa')}.\n" for m, b in sweep.get("aligned_before", {}).items())
    return (f"# surgery sweep\n\nRecipe `{sweep['recipe']}`; HS judged by `{judge}`; FA = accuracy of the first task.\n"
            f"Before the attack ({base['model']}): HS {fmt_score(base, 'hs')}, "
            f"FA {fmt_score(base, 'fa')}. {entries}; heads+: positive-divergence heads "
            f"before->after fine-tuning, `sig`: those whose 95% bootstrap interval lies above 0.\n" + before)


def correlation_md(corr: dict, judge: str) -> str:
    """The correlation section of sweep.md (`surgery report`)."""
    lines = [f"\n## Positive heads and harm\n\nSpearman's rho across cells between positive heads after fine-tuning "
             f"and harmful score (judge `{judge}`), two-sided p-value:\n"]
    for name, what in (("sign", "heads with d > 0"), ("significant", "heads whose 95% interval lies above 0")):
        c = corr[name]
        lines.append(f"- {what}: " + (f"rho = {c['rho']:.3f}, p = {c['p']:.3g}, N = {c['n']} cells" if c["rho"] is not None
                                      else f"not computed, N = {c['n']} cells ({c['why']})"))
    return "\n".join(lines) + "\n"
