"""What `surgery eval` shows and writes: Rich tables, results.json, samples.jsonl, report.md, scores.png.

Runs are columns everywhere, so several adapters read side by side. Harmful scores always carry the
name of the judge that produced them.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from ..files import atomic_write_text
from .figures import new_figure, save_png


def run_label(run: dict) -> str:
    return run["adapter"] if run["adapter"] else f"base {run['base']}"


def with_interval(value: float, ci: list[float] | None, spec: str = ".1f") -> str:
    """`12.5 [5.3, 26.1]`: a score and its 95% interval."""
    return f"{value:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def safety_rows(runs: list[dict]) -> list[list[str]]:
    """[benchmark, judge, N, harmful score [95% CI] per run]; N is the same for every run (same prompts)."""
    rows = []
    for name, first in runs[0]["safety"].items():
        rows.append([name, first["judge"], str(first["n"])]
                    + [with_interval(r["safety"][name]["harmful_score"], r["safety"][name].get("ci95"), ".2f")
                       for r in runs])
    return rows


def task_rows(runs: list[dict]) -> list[list[str]]:
    """[task, metric, value [95% CI] (accuracy) or value ± stderr per run]."""
    def cell(values: dict, metric: str) -> str:
        if metric + "_ci95" in values:
            return with_interval(values[metric], values[metric + "_ci95"], ".4f")
        text = f"{values.get(metric, float('nan')):.4f}"
        return text + (f" ± {values[metric + '_stderr']:.4f}" if metric + "_stderr" in values else "")

    rows = []
    for task, metrics in runs[0]["tasks"].items():
        for metric in (m for m in metrics if not m.endswith(("_stderr", "_ci95")) and m != "n"):
            rows.append([task, metric] + [cell(r["tasks"][task], metric) for r in runs])
    return rows


def _table(title: str, header: list[str], labels: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for col in header:
        table.add_column(col)
    for label in labels:
        table.add_column(label, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def tables(runs: list[dict]) -> list[Table]:
    labels = [run_label(r) for r in runs]
    out = []
    if runs[0]["safety"]:
        out.append(_table("Harmful score (100 * judged harmful / N, [95% Wilson interval]; lower is safer)",
                          ["benchmark", "judge", "N"],
                          labels, safety_rows(runs)))
    if runs[0]["tasks"]:
        out.append(_table("Capability (lm-evaluation-harness)", ["task", "metric"], labels, task_rows(runs)))
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def markdown(runs: list[dict], provenance: dict | None = None) -> str:
    labels = [f"`{run_label(r)}`" for r in runs]
    text = "# surgery eval\n\nRuns: " + ", ".join(labels) + "\n"
    if provenance:
        g = provenance["generation"]
        text += (f"\nPrompts: {g['prompt_format']}; up to {g['max_new_tokens']} new tokens, greedy; inputs cut at "
                 f"{g['max_input_tokens'] or 'no limit'} tokens" + (f"; preset {g['preset']}" if g["preset"] else "")
                 + f". Judge `{provenance['judge']['name']}`. Full provenance in results.json.\n")
    if runs[0]["safety"]:
        text += "\n## Harmful score, [95% Wilson interval] (lower is safer)\n\n"
        text += markdown_table(["benchmark", "judge", "N", *labels], safety_rows(runs))
    if runs[0]["tasks"]:
        text += "\n## Capability\n\n" + markdown_table(["task", "metric", *labels], task_rows(runs))
    return text


def write_plot(path: Path, runs: list[dict]) -> None:
    """Grouped bars: harmful score per benchmark (left) and task metrics in % (right), one colour per run."""
    panels = []  # (title, bar names, per run: [(value, [lo, hi] or None)] in %)
    if runs[0]["safety"]:
        names = list(runs[0]["safety"])
        judge = runs[0]["safety"][names[0]]["judge"]
        panels.append((f"harmful score, judge {judge} (lower is safer)", names,
                       [[(r["safety"][n]["harmful_score"], r["safety"][n].get("ci95")) for n in names] for r in runs]))
    if runs[0]["tasks"]:
        keys = [(t, m) for t, ms in runs[0]["tasks"].items() for m in ms
                if not m.endswith(("_stderr", "_ci95")) and m != "n"]

        def percent(values: dict, m: str) -> tuple[float, list[float] | None]:
            ci = values.get(m + "_ci95")
            return 100 * values.get(m, float("nan")), [100 * x for x in ci] if ci else None

        panels.append(("capability, % (higher is better)", [f"{t}\n{m}" for t, m in keys],
                       [[percent(r["tasks"][t], m) for t, m in keys] for r in runs]))
    fig, axes = new_figure(1, len(panels), (5.5 * len(panels), 4))
    width = 0.8 / len(runs)
    for ax, (title, names, values) in zip(axes[0], panels):
        for i, (run, cells) in enumerate(zip(runs, values)):
            xs = [x + (i - (len(runs) - 1) / 2) * width for x in range(len(names))]
            heights = [v for v, _ in cells]
            errors = [[max(v - ci[0], 0) if ci else 0 for v, ci in cells], [max(ci[1] - v, 0) if ci else 0 for v, ci in cells]]
            ax.bar(xs, heights, width, label=run_label(run), yerr=errors, capsize=3, ecolor="0.3")
            for x, h, up in zip(xs, heights, errors[1]):  # above the interval, clear of its cap
                ax.text(x, h + up + 1.5, f"{h:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylim(0, 112)
        ax.set_title(title + "\nerror bars: 95% Wilson interval", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path, dpi=120, tight=False)


def write_outputs(out: Path, runs: list[dict], samples: list[dict], provenance: dict | None = None) -> None:
    """results.json, samples.jsonl, report.md and scores.png, each written whole or not at all."""
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    atomic_write_text(out / "report.md", markdown(runs, provenance))
    if runs[0]["safety"] or runs[0]["tasks"]:
        write_plot(out / "scores.png", runs)
    # last, so a results.json on disk means the other files are complete too
    atomic_write_text(out / "results.json", json.dumps({"provenance": provenance, "runs": runs}, indent=1) + "\n")
