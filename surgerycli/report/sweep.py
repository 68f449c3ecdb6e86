"""What `surgery sweep` (and `surgery demo`) show and write: the table, sweep.md, sweep.png, sweep.json."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..files import atomic_write, atomic_write_text
from .eval import markdown_table


def method_label(cell: dict) -> str:
    """The method's title from the defense registry, with Surgery's alpha."""
    from ..train.defenses import registry

    title = registry()[cell["method"]].title
    return title + (f" a={cell['alpha']:g}" if cell.get("alpha") is not None else "")


def _fmt(x: float | None, ci: list[float] | None = None) -> str:
    """`12.5 [5.3, 26.1]`, or `-` for a missing score."""
    return "-" if x is None else f"{x:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def sweep_table(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paper-style table: poison ratio rows; HS, FA and positive heads per method."""
    methods = list(dict.fromkeys(method_label(c) for c in sweep["cells"]))
    header = ["poison ratio"] + [f"{m} {k}" for m in methods for k in ("HS", "FA", "heads+")]
    by_key = {(c["poison_ratio"], method_label(c)): c for c in sweep["cells"]}
    rows = []
    for r in dict.fromkeys(c["poison_ratio"] for c in sweep["cells"]):
        row = [f"{r:g}"]
        for m in methods:
            c = by_key[r, m]
            if c["status"] != "ok":
                row += ["failed", "", ""]
            else:
                heads = f"{c['positive_heads_before']}->{c['positive_heads_after']}" if c["positive_heads_after"] is not None else "-"
                row += [_fmt(c["harmful_score"], c.get("hs_ci95")), _fmt(c["accuracy"], c.get("fa_ci95")), heads]
        rows.append(row)
    return header, rows


def paper_table(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """The papers' layout: rows = methods; columns = HS at each poison ratio and their average, then FA."""
    ratios = list(dict.fromkeys(c["poison_ratio"] for c in sweep["cells"]))
    methods = list(dict.fromkeys(method_label(c) for c in sweep["cells"]))
    by_key = {(method_label(c), c["poison_ratio"]): c for c in sweep["cells"]}
    header = ["method", *[f"HS p={r:g}" for r in ratios], "HS avg", *[f"FA p={r:g}" for r in ratios], "FA avg"]
    rows = []
    for m in methods:
        row = [m]
        for key, ci_key in (("harmful_score", "hs_ci95"), ("accuracy", "fa_ci95")):
            cells = [by_key.get((m, r)) for r in ratios]
            values = [c[key] for c in cells if c and c["status"] == "ok" and c[key] is not None]
            row += [_fmt(c[key], c.get(ci_key)) if c and c["status"] == "ok" else "failed" for c in cells]
            row.append(_fmt(sum(values) / len(values)) if len(values) == len(ratios) else "-")
        rows.append(row)
    return header, rows


def write_sweep(out: Path, sweep: dict, judge: str, console: Console) -> None:
    header, rows = sweep_table(sweep)
    table = Table(title=f"HS: harmful score, judge {judge} (lower is safer); FA: task accuracy %; [95% Wilson "
                        f"interval]; heads+: positive heads before->after")
    for col in header:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    paper_header, paper_rows = paper_table(sweep)
    paper = Table(title=f"The papers' layout: HS (judge {judge}) and FA per poison ratio, and their averages")
    for col in paper_header:
        paper.add_column(col, justify="right")
    for row in paper_rows:
        paper.add_row(*row)
    console.print(paper)
    base = sweep["base"]
    md = (f"# surgery sweep\n\nRecipe `{sweep['recipe']}`; HS judged by `{judge}`; FA = accuracy of the first task.\n"
          f"Before the attack ({base['model']}): HS {_fmt(base['harmful_score'], base.get('hs_ci95'))}, "
          f"FA {_fmt(base['accuracy'], base.get('fa_ci95'))}. Brackets: 95% Wilson intervals.\n"
          + "".join(f"Before the attack, aligned with {m} ({b['model']}): HS {_fmt(b['harmful_score'], b.get('hs_ci95'))}, "
                    f"FA {_fmt(b['accuracy'], b.get('fa_ci95'))}.\n" for m, b in sweep.get("aligned_before", {}).items())
          + "\n" + markdown_table(header, rows)
          + f"\n## The papers' layout\n\nHS judged by `{judge}`; FA = accuracy of the first task; average over the "
          f"poison ratios.\n\n" + markdown_table(*paper_table(sweep)))
    failed = [c for c in sweep["cells"] if c["status"] != "ok"]
    md += "".join(f"\nFailed: `{c['name']}`: {c['error']}\n" for c in failed)
    atomic_write_text(out / "sweep.md", md)
    write_sweep_plot(out / "sweep.png", sweep, judge)
    atomic_write_text(out / "sweep.json", json.dumps({**sweep, "judge": judge}, indent=1) + "\n")


def write_sweep_plot(path: Path, sweep: dict, judge: str) -> None:
    """HS and FA per method against poison ratio, with 95% Wilson error bars: lines over several ratios
    (each method nudged sideways so equal points stay visible), grouped bars at a single ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [c for c in sweep["cells"] if c["status"] == "ok"]
    methods = list(dict.fromkeys(method_label(c) for c in sweep["cells"]))
    ratios = sorted({c["poison_ratio"] for c in sweep["cells"]})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for key, ci_key, ax, title in (("harmful_score", "hs_ci95", axes[0], f"harmful score, judge {judge}"),
                                   ("accuracy", "fa_ci95", axes[1], "task accuracy %")):
        for i, m in enumerate(methods):
            cells = [c for c in ok if method_label(c) == m and c[key] is not None]
            if not cells:
                continue
            offset = (i - (len(methods) - 1) / 2)
            ys = [c[key] for c in cells]
            err = [[y - (c.get(ci_key) or [y, y])[0] for y, c in zip(ys, cells)],
                   [(c.get(ci_key) or [y, y])[1] - y for y, c in zip(ys, cells)]]
            if len(ratios) == 1:
                width = 0.8 / len(methods)
                ax.bar([offset * width], ys, width, yerr=err, capsize=4, label=m, ecolor="0.3")
                ax.text(offset * width, ys[0] + err[1][0] + 1.5, f"{ys[0]:.1f}", ha="center", va="bottom", fontsize=8)
            else:
                step = 0.012 * (ratios[-1] - ratios[0])
                xs = [c["poison_ratio"] + offset * step for c in cells]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
        if sweep["base"][key] is not None:
            ax.axhline(sweep["base"][key], color="gray", linestyle="--", label="before attack")
        if len(ratios) == 1:
            ax.set_xticks([0], [f"poison ratio {ratios[0]:g}"])
        else:
            ax.set_xlabel("poison ratio")
        ax.set_title(title + "\nerror bars: 95% Wilson interval", fontsize=10)
        ax.set_ylim(-2, 112)
    handles, labels = axes[0].get_legend_handles_labels()  # one legend, beside the plots: it covers no bar
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)
