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


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


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
                row += [_fmt(c["harmful_score"]), _fmt(c["accuracy"]), heads]
        rows.append(row)
    return header, rows


def write_sweep(out: Path, sweep: dict, judge: str, console: Console) -> None:
    header, rows = sweep_table(sweep)
    table = Table(title=f"HS: harmful score, judge {judge} (lower is safer); FA: task accuracy %; heads+: positive heads before->after")
    for col in header:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    base = sweep["base"]
    md = (f"# surgery sweep\n\nRecipe `{sweep['recipe']}`; HS judged by `{judge}`; FA = accuracy of the first task.\n"
          f"Before the attack ({base['model']}): HS {_fmt(base['harmful_score'])}, FA {_fmt(base['accuracy'])}.\n\n"
          + markdown_table(header, rows))
    failed = [c for c in sweep["cells"] if c["status"] != "ok"]
    md += "".join(f"\nFailed: `{c['name']}`: {c['error']}\n" for c in failed)
    atomic_write_text(out / "sweep.md", md)
    write_sweep_plot(out / "sweep.png", sweep, judge)
    atomic_write_text(out / "sweep.json", json.dumps({**sweep, "judge": judge}, indent=1) + "\n")


def write_sweep_plot(path: Path, sweep: dict, judge: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, ax, title in (("harmful_score", axes[0], f"harmful score ({judge})"), ("accuracy", axes[1], "task accuracy %")):
        for m in dict.fromkeys(method_label(c) for c in sweep["cells"]):
            pts = [(c["poison_ratio"], c[key]) for c in sweep["cells"]
                   if method_label(c) == m and c["status"] == "ok" and c[key] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        if sweep["base"][key] is not None:
            ax.axhline(sweep["base"][key], color="gray", linestyle="--", label="before attack")
        ax.set_xlabel("poison ratio")
        ax.set_title(title)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
