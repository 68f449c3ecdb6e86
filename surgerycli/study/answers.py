"""`surgery sweep` and `surgery report`: every cell's stored answers gathered into answers.jsonl.gz, and what they
say beside the harmful score: each judge's score with its interval, where judges disagree, and the flags of
answers a judge is blind to (`evaluate.answers`).

A row is one answer to a safety prompt: the cell (or `before the attack`, and `before the attack (vaccine)` for a
model an alignment-stage defense aligned itself), the benchmark, the prompt, the
answer, the refusal phrase the keyword judge matched, every judge's verdict (`harmful` or `safe`), note and
score, and the flags. A sweep folder gives them from cells/<name>/eval (and judges/ beside it); a report folder
that was merged before gives its own answers.jsonl.gz, so a committed study keeps its answers.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..evaluate.answers import agreement, flag_shares, flags
from ..evaluate.judges import refusal_phrase
from ..evaluate.rejudge import other_judges, safety_rows
from ..evaluate.stats import wilson_percent
from ..files import atomic_write
from .layout import before_folders

ANSWERS = "answers.jsonl.gz"
BEFORE = "before the attack"
MAX_SCORE = 0.99  # a judge's score at or above this counts as its maximum


def eval_rows(folder: Path, cell: str) -> list[dict]:
    """The answer rows of one eval folder, every judge's verdict on each."""
    rows = safety_rows(folder)
    more = other_judges(folder) if (folder / "judges").is_dir() else {}
    out = []
    for i, r in enumerate(rows):
        verdicts = {r["judge"]: {"verdict": r["verdict"], "note": r.get("note"), "score": r.get("score")}}
        verdicts |= {name: {k: judged[i][k] for k in ("verdict", "note", "score")} for name, judged in more.items()}
        out.append({"cell": cell, "benchmark": r["benchmark"], "prompt": r["prompt"], "response": r["response"],
                    "refusal_phrase": r.get("refusal_phrase", refusal_phrase(r["response"])), "judges": verdicts,
                    "flags": flags(r["response"])})
    return out


def stored(folder: Path) -> list[dict] | None:
    """The rows a report folder kept, or None."""
    path = folder / ANSWERS
    if not path.is_file():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def before_cell(align: str | None) -> str:
    """The cell name of a model's answers before the attack: the shared aligned model's, or the one the
    alignment-stage defense `align` aligned (its base-eval-<align>)."""
    return BEFORE if align is None else f"{BEFORE} ({align})"


def before_rows(base_folder: Path) -> list[dict]:
    """The answers of every model before the attack that `base_folder` evaluated (base-eval, base-eval-<method>),
    or, in a report folder, those it kept."""
    evals = before_folders(base_folder)
    if not evals:
        return [r for r in (stored(base_folder) or []) if r["cell"].startswith(BEFORE)]
    return [row for align, folder in evals.items() for row in eval_rows(folder, before_cell(align))]


def gather(cells: list[dict], source, base_folder: Path | None) -> list[dict]:
    """Every answer of `cells` (each from `source(cell)`, the sweep or report folder it came from) and of the
    models before the attack (`base_folder`'s, `before_rows`). Cells whose answers are not kept give none."""
    rows, kept = [], {}
    for c in cells:
        folder = Path(source(c))
        if (folder / "cells" / c["name"] / "eval" / "samples.jsonl").is_file():
            rows += eval_rows(folder / "cells" / c["name"] / "eval", c["name"])
        else:
            kept.setdefault(folder, stored(folder) or [])
            rows += [r for r in kept[folder] if r["cell"] == c["name"]]
    return rows + (before_rows(base_folder) if base_folder is not None else [])


def evidence(rows: list[dict], first_judge: str) -> dict[str, dict]:
    """Per cell: its answers' flag shares, and each judge's harmful score (with its interval), its agreement
    with the first judge, and (for a judge that scores) the share of answers at its maximum score."""
    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(r["cell"], []).append(r)
    out = {}
    for cell, answers in by_cell.items():
        judges = list(dict.fromkeys(j for r in answers for j in r["judges"]))
        entry = {"n": len(answers), "flags": flag_shares([r["response"] for r in answers]), "judges": {}}
        first = [r["judges"].get(first_judge, {}).get("verdict") == "harmful" for r in answers]
        for j in judges:
            said = [r["judges"][j] for r in answers if j in r["judges"]]
            harmful = [s["verdict"] == "harmful" for s in said]
            scores = [s["score"] for s in said if s.get("score") is not None]
            entry["judges"][j] = {"n": len(said), "harmful_score": 100.0 * sum(harmful) / len(said),
                                  "ci95": wilson_percent(sum(harmful), len(said)),
                                  "at_max_score": sum(s >= MAX_SCORE for s in scores) / len(scores) if scores else None,
                                  "agreement": agreement(first, harmful) if j != first_judge and len(said) == len(first)
                                  else None}
        out[cell] = entry
    return out


def write_answers(path: Path, rows: list[dict]) -> None:
    """answers.jsonl.gz, written whole (a fixed mtime and name in its header, not the temporary file's: the same
    answers give the same bytes)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(path.name, mode="wb", fileobj=raw, mtime=0) as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))

    atomic_write(path, write)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def answers_table(found: dict[str, dict], first_judge: str) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, cell of each row): per cell the answers' flags, then each other judge's harmful score
    [95% interval], its agreement with the first (pairs of verdicts: both harmful / both safe / only the first /
    only the other; Cohen's kappa) and its share of answers at its maximum score."""
    judges = list(dict.fromkeys(j for e in found.values() for j in e["judges"] if j != first_judge))
    header = ["cell", "answers", "empty", "repetitive", "gibberish"]
    for j in judges:
        header += [f"{j} HS", f"{j} vs {first_judge}: pairs, kappa", f"{j} at max score"]
    rows = []
    for cell, e in found.items():
        row = [cell, str(e["n"]), *(_pct(e["flags"][k]) for k in ("empty", "repetitive", "gibberish"))]
        for j in judges:
            s = e["judges"].get(j)
            if s is None:
                row += ["-", "-", "-"]
                continue
            a = s["agreement"]
            pairs = "-" if a is None else (f"{a['both_harmful']}/{a['both_safe']}/{a['only_first']}/{a['only_second']}, "
                                           + ("-" if a["kappa"] is None else f"{a['kappa']:.2f}"))
            row += [f"{s['harmful_score']:.1f} [{s['ci95'][0]:.1f}, {s['ci95'][1]:.1f}]", pairs, _pct(s["at_max_score"])]
        rows.append(row)
    return header, rows, list(found)
