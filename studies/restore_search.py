"""Resume a committed `surgery search` on a new machine:
    python studies/restore_search.py studies/smollm2-2026-12-05/worst study-out/worst

A search resumes from its storage (search.db) and its cells, which live in the output folder and are not
committed; the committed folder (`surgery report`'s output) keeps every completed trial's cell record
(sweep.json), the settings, floors and scores Optuna held (search.json), and the answers (answers.jsonl.gz).
This writes them back: each cell's cell.json, one Optuna study per configuration with its completed trials (the
same numbers, parameters, objective, user attributes and floor constraint that `surgery search` records), and
the answers, so `surgery search` with the same arguments draws the trials still to come, and `surgery report`
of the output folder shows the restored cells' answers. The models the trials trained are not kept; a
confirmation seed still to run trains its cell anew. Refuses an output folder that already holds a storage.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution

SPACE = re.compile(r"^(\S+) in \[([^,]+), ([^\]]+)\]( \(log\))?( \(integers\))?$")


def distributions(space: list[str]) -> dict:
    """search.json's space descriptions (`Param.describe`) as Optuna distributions."""
    out = {}
    for text in space:
        m = SPACE.match(text)
        if m is None:
            sys.exit(f"search.json: space {text!r}: expected 'KEY in [LOW, HIGH]' (a list space cannot be restored)")
        key, low, high, log, ints = m.groups()
        out[key] = IntDistribution(int(float(low)), int(float(high)), log=bool(log)) if ints else \
            FloatDistribution(float(low), float(high), log=bool(log))
    return out


def restore(committed: Path, out: Path) -> dict[str, int]:
    """Write `committed`'s cells, studies and answers into `out`; the completed trials restored per study."""
    search = json.loads((committed / "search.json").read_text(encoding="utf-8"))
    sweep = json.loads((committed / "sweep.json").read_text(encoding="utf-8"))
    if (out / "search.db").exists():
        sys.exit(f"{out / 'search.db'}: a storage is already there; restore into a new folder")
    for cell in sweep["cells"]:
        record = {k: v for k, v in cell.items() if k != "sweep"}  # `sweep` is the report's, not the cell's
        (out / "cells" / cell["name"]).mkdir(parents=True, exist_ok=True)
        (out / "cells" / cell["name"] / "cell.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    dists = distributions(search["space"])
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / 'search.db').resolve()}")
    counts = {}
    for config in search["configurations"]:
        study = optuna.create_study(study_name=config["study"], storage=storage, direction="maximize")
        for t in sorted(config["trials"], key=lambda t: t["trial"]):
            if t["trial"] != len(study.trials):
                sys.exit(f"search.json: {config['study']} trial {t['trial']} follows {len(study.trials)} trials; "
                         f"only a study numbered 0, 1, ... without retried trials can be restored")
            attrs = {"hs_n": t["hs_n"], "accuracy": t["accuracy"], "fa_n": t["fa_n"], "fa": t["accuracy"],
                     "floor_fa": t["floor_fa"], "cell": t["name"]}
            constraints = None if t["accuracy"] is None else {"floor": t["floor_fa"] - t["accuracy"]}
            study.add_trial(optuna.trial.create_trial(
                value=t["harmful_score"], params=t["params"], distributions={k: dists[k] for k in t["params"]},
                user_attrs=attrs, constraints=constraints))
        counts[config["study"]] = len(study.trials)
    if (committed / "answers.jsonl.gz").is_file():
        shutil.copyfile(committed / "answers.jsonl.gz", out / "answers.jsonl.gz")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("committed", type=Path, help="the committed search folder (search.json, sweep.json)")
    parser.add_argument("out", type=Path, help="the search's output folder to write (its --out)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    counts = restore(args.committed, args.out)
    print("restored: " + ", ".join(f"{k} {v} trials" for k, v in counts.items()))


if __name__ == "__main__":
    main()
