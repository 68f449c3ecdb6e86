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

from ..evaluate.stats import percent_interval
from ..files import atomic_write_text, write_json
from .aggregate import score_stats
from .search import Search, first_number, load_study, open_storage, trial_cell
from .search_tables import print_results, search_md
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


def write_results(search: Search, results: list[dict], judge: str, break_at: float, console: Console) -> None:
    """Print the table; write search.md and search.json (last)."""
    record = {"recipe": str(search.recipe), "overrides": list(search.overrides), "judge": judge, "floor": search.floor,
              "seed": search.seed, "trials": search.trials, "break_at": break_at,
              "space": [p.describe() for p in search.space], "configurations": results}
    print_results(record, console)
    atomic_write_text(search.out / "search.md", search_md(record))
    write_json(search.out / "search.json", record)


def config_label(config) -> str:
    return method_label(config.record())

