"""studies/restore_search.py: a committed search folder written back into a search's output folder reads as
the search left it (its trials' records and worst cases), and Optuna draws the next trials from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from studyscripts import study_script

from surgerycli.study.grid import Cell
from surgerycli.study.search import Search, load_study, open_storage
from surgerycli.study.search_report import summarize, trial_records
from surgerycli.study.space import parse_param

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "studies" / "smollm2-2026-12-05" / "worst"
SPACE = ["train.learning_rate=2e-5:1e-3:log", "data.poison_ratio=0.05:0.3", "train.epochs=1:4", "lora.r=8:32:int"]


def restore_module():
    return study_script("restore_search")


def test_restored_search_reads_as_committed(tmp_path: Path) -> None:
    committed = json.loads((COMMITTED / "search.json").read_text(encoding="utf-8"))
    counts = restore_module().restore(COMMITTED, tmp_path)
    assert counts == {c["study"]: len(c["trials"]) for c in committed["configurations"]}
    # each configuration as the search named it: its method, and the alpha its name ends with ("surgery-a3000")
    configs = [Cell(0.1, c["method"], float(c["study"].rsplit("-a", 1)[1]) if "-a" in c["study"] else None)
               for c in committed["configurations"]]
    space = tuple(parse_param(t) for t in SPACE)
    search = Search(ROOT / "recipes" / "demo-attack.toml", (), tuple(configs), space, 12, 0.8, 0, tmp_path)
    for c, config in zip(committed["configurations"], configs):
        assert search.study_name(config) == c["study"]
        records = trial_records(search, config)
        assert records == c["trials"]  # every field of every trial, in Optuna's order
        assert summarize(records, committed["break_at"]) == c["summary"]
        # the next trial: TPE accepts the restored distributions (a mismatch raises) and draws inside the space
        trial = load_study(search, config, open_storage(search)).ask()
        assert trial.number == len(c["trials"])
        for p in space:
            assert p.low <= p.suggest(trial) <= p.high
    assert (tmp_path / "answers.jsonl.gz").read_bytes() == (COMMITTED / "answers.jsonl.gz").read_bytes()


def test_refuses_a_folder_with_a_storage(tmp_path: Path) -> None:
    (tmp_path / "search.db").write_bytes(b"")
    with pytest.raises(SystemExit, match="search.db: a storage is already there"):
        restore_module().restore(COMMITTED, tmp_path)
