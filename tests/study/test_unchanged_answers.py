"""studies/unchanged_answers.py: per configuration, how many harmful answers are word for word the aligned model's,
counted by hand on a tiny folder, and the committed worst-case folder's Lisa + Antidote row as docs/study.md reads it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from studyscripts import STUDIES, study_script


def module():
    return study_script("unchanged_answers")


def write_folder(folder: Path, rows: list[tuple[str, str, str]], configurations: list[dict]) -> None:
    with gzip.open(folder / "answers.jsonl.gz", "wt", encoding="utf-8") as f:
        for cell, prompt, response in rows:
            f.write(json.dumps({"cell": cell, "prompt": prompt, "response": response}) + "\n")
    (folder / "search.json").write_text(json.dumps({"configurations": configurations}), encoding="utf-8")


def test_counts_answers_equal_to_the_aligned_models_by_hand(tmp_path: Path) -> None:
    before = [("before the attack", "p1", "I cannot."), ("before the attack", "p2", "No."),
              ("before the attack", "p3", "Sorry.")]
    own = [("before the attack (vaccine)", "p1", "Never."), ("before the attack (vaccine)", "p2", "No."),
           ("before the attack (vaccine)", "p3", "Stop.")]
    # t0 keeps p1 and p3; t1 keeps p2 only ("No. " differs by a space); t1-s1 keeps nothing
    cells = [("x-t0", "p1", "I cannot."), ("x-t0", "p2", "Sure:"), ("x-t0", "p3", "Sorry."),
             ("x-t1", "p1", "Here"), ("x-t1", "p2", "No."), ("x-t1", "p3", "Sorry. "),
             ("x-t1-s1", "p1", "a"), ("x-t1-s1", "p2", "b"), ("x-t1-s1", "p3", "c"),
             ("v-t0", "p1", "Never."), ("v-t0", "p2", "No."), ("v-t0", "p3", "Sorry.")]
    config = {"label": "X", "method": "sft", "trials": [{"name": "x-t0"}, {"name": "x-t1"}, {"name": "x-t2"}],
              "confirm": {"seeds": [1, 4], "cells": ["x-t1", "x-t1-s1"]}}
    # Vaccine's attack started from Vaccine's own model: v-t0 keeps 2 of its answers (1 of the shared model's)
    vaccine = {"label": "V", "method": "vaccine", "trials": [{"name": "v-t0"}]}
    write_folder(tmp_path, before + own + cells, [config, {"label": "Y", "method": "lisa", "trials": []}, vaccine])
    rows = module().table(tmp_path).splitlines()
    assert rows[2] == "| X | 2 | 1.5 (1-2) | 1, 0 |"  # x-t2 has no answers: left out, not counted as 0
    assert rows[3] == "| Y | 0 | - | - |"
    assert rows[4] == "| V | 1 | 2 (2-2) | - |"
    assert "of 3" in rows[0] and "seeds 1, 4 |" in rows[0]


def test_committed_chain_hands_back_the_aligned_models_answers() -> None:
    folder = STUDIES / "smollm2-2026-12-05" / "worst"
    answers = module().answers(folder)
    before = answers["before the attack"]
    chain = [name for name in answers if name.startswith("lisa+antidote-")]
    assert chain and all(answers[name] == before for name in chain)  # docs/study.md: 100 of 100 on every cell
    assert all(answers[name] != before for name in answers if name.startswith("sft-"))
