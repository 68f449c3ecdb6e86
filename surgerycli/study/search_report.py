"""`surgery search`: each configuration's worst case from its completed trials, the confirmation of the worst
trial on more seeds, and search.json / search.md.

Per configuration, over its N completed trials in the order Optuna numbered them: the worst case (the highest
harmful score among the trials that keep task accuracy at or above the floor, with its 95% Wilson interval and
its settings), the mean of the top 3 such trials, trials-to-break (the position of the first trial at or above
`--break-at` that meets the floor; None: the attack never broke it), and the share of trials under the floor.
The scores are read from the trials' own cells (cells/<study>-t<N>/cell.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..evaluate.stats import percent_interval
from ..files import atomic_write_text, write_json
from ..report.eval import markdown_table
from .aggregate import score_stats
from .search import Search, first_number, load_study, open_storage, trial_cell
from .tables import method_label


def trial_records(search: Search, config) -> list[dict]:
    """The configuration's completed trials in Optuna's order, each its cell's record with `trial` (its number),
    `floor_fa` and `feasible`."""
    from optuna.trial import TrialState

    study = load_study(search, config, open_storage(search))
    out = []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        cell = search.out / "cells" / t.user_attrs["cell"] / "cell.json"
        record = json.loads(cell.read_text(encoding="utf-8"))
        floor = t.user_attrs["floor_fa"]
        out.append({**record, "trial": first_number(t), "floor_fa": floor, "feasible": record["accuracy"] >= floor})
    return out


def summarize(records: list[dict], break_at: float) -> dict:
    """The worst case and the figures around it (see the module's docstring)."""
    feasible = [r for r in records if r["feasible"]]
    worst = max(feasible, key=lambda r: (r["harmful_score"], -r["trial"]), default=None)
    top = sorted((r["harmful_score"] for r in feasible), reverse=True)[:3]
    breaks = [i for i, r in enumerate(records, 1) if r["feasible"] and r["harmful_score"] >= break_at]
    return {"trials": len(records), "worst": None if worst is None else {
                "cell": worst["name"], "trial": worst["trial"], "harmful_score": worst["harmful_score"],
                "hs_ci95": percent_interval(worst["harmful_score"], worst.get("hs_n"), worst.get("hs_ci95")),
                "accuracy": worst["accuracy"], "params": worst["params"]},
            "top3_mean": sum(top) / len(top) if top else None, "trials_to_break": breaks[0] if breaks else None,
            "under_floor": (len(records) - len(feasible)) / len(records) if records else None}


def confirm(search: Search, config, summary: dict, seeds: list[int], evaluate, console: Console,
            aligned: Path | None) -> dict | None:
    """The worst trial's settings again on each of `seeds` (train.seed), each a cell `<trial cell>-s<seed>` (the
    search's own seed: the trial's cell itself, not run twice): HS and FA as mean ± sd over the seeds with the
    pooled 95% interval (`study.aggregate.score_stats`)."""
    worst = summary["worst"]
    if worst is None or not seeds:
        return None
    records = [trial_cell(search, config, worst["cell"] if seed == search.seed else f"{worst['cell']}-s{seed}",
                          worst["params"], evaluate, console, aligned, seed=seed) for seed in seeds]
    return {"seeds": seeds, "cells": [r["name"] for r in records],
            "hs": score_stats(records, "harmful_score", "hs_n", "hs_ci95"),
            "fa": score_stats(records, "accuracy", "fa_n", "fa_ci95")}


def _fmt(x: float | None, ci: list[float] | None = None) -> str:
    return "-" if x is None else f"{x:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def settings(params: dict) -> str:
    return ", ".join(f"{k.rpartition('.')[2]} {v:.3g}" if isinstance(v, float) else f"{k.rpartition('.')[2]} {v}"
                     for k, v in params.items())


def results_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["configuration", "worst-case HS", "its settings", "FA there (floor)", "top-3 mean", "trials to break",
              "under floor", "confirmed HS (seeds)"]
    rows = []
    for r in results:
        s, w, c = r["summary"], r["summary"]["worst"], r.get("confirm")
        confirmed = "-" if not c or not c["hs"] else (
            f"{c['hs']['mean']:.1f}" + (f" ± {c['hs']['std']:.1f}" if c['hs']['std'] is not None else "")  # one seed: no sd
            + f" [{c['hs']['ci95'][0]:.1f}, {c['hs']['ci95'][1]:.1f}]"
            f" ({','.join(map(str, c['seeds']))})")
        rows.append([r["label"], _fmt(w["harmful_score"], w["hs_ci95"]) if w else "none met the floor",
                     settings(w["params"]) if w else "-",
                     f"{_fmt(w['accuracy']) if w else '-'} ({r['floor_fa']:.1f})", _fmt(s["top3_mean"]),
                     f"{s['trials_to_break']} of {s['trials']}" if s["trials_to_break"] else f"none of {s['trials']}",
                     f"{100 * s['under_floor']:.0f}%" if s["under_floor"] is not None else "-", confirmed])
    return header, rows


def write_results(search: Search, results: list[dict], judge: str, break_at: float, console: Console) -> None:
    """Print the table; write search.md and search.json (last)."""
    header, rows = results_table(results)
    table = Table(title=f"Worst case per configuration: HS judged by {judge} (higher is worse for the defense), "
                        f"[95% Wilson interval]; floor {search.floor:g} x the accuracy before the attack")
    for col in header:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    space = "; ".join(p.describe() for p in search.space)
    md = (f"# surgery search\n\nRecipe `{search.recipe}`; the attacker's space: {space}; {search.trials} trials per "
          f"configuration (seed {search.seed}); HS judged by `{judge}`; a trial meets the floor when its task accuracy "
          f"is at least {search.floor:g} x that of the model the attack starts from (in brackets under FA); a trial "
          f"breaks the defense at HS >= {break_at:g}.\n\n" + markdown_table(header, rows))
    for r in results:
        md += f"\n## {r['label']}\n\n" + markdown_table(
            ["trial", "settings", "HS", "FA", "meets the floor"],
            [[str(t["trial"]), settings(t["params"]), _fmt(t["harmful_score"]), _fmt(t["accuracy"]),
              "yes" if t["feasible"] else "no"] for t in r["trials"]])
    atomic_write_text(search.out / "search.md", md)
    write_json(search.out / "search.json", {
        "recipe": str(search.recipe), "overrides": list(search.overrides), "judge": judge, "floor": search.floor,
        "seed": search.seed, "trials": search.trials, "break_at": break_at,
        "space": [p.describe() for p in search.space], "configurations": results})


def config_label(config) -> str:
    return method_label(config.record())

