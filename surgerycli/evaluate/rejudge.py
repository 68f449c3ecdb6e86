"""`surgery judge FOLDER... --judge KIND[:PATH]`: the stored answers of eval, sweep or search folders scored again by
another judge, without generating again; its results go beside the first judge's (judges/), never over them.

An eval folder keeps every answer in samples.jsonl (prompt, answer, the first judge's verdict). For each eval
folder found (the folder itself, or a sweep's or search's cells/*/eval and base-eval*), the new judge's verdicts
are written to judges/<name>.jsonl (a row per safety answer, in samples.jsonl's order) and its harmful score
per run and benchmark, with the 95% Wilson interval, to judges/<name>.json. `surgery report` reads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_text, read_json, write_json
from .judges import judge_score
from .stats import wilson_percent


def eval_folders(paths: list[Path]) -> list[Path]:
    """Every eval folder (one holding results.json and samples.jsonl) at or under each path, in order."""
    found = []
    for path in paths:
        if not path.is_dir():
            raise InputError(f"{path}: no such folder")
        here = [path] if (path / "samples.jsonl").is_file() else sorted(
            p.parent for p in [*path.glob("cells/*/eval/samples.jsonl"), *path.glob("base-eval*/samples.jsonl")])
        if not here:
            raise InputError(f"{path}: no stored answers (expected an eval folder with samples.jsonl, or a sweep or "
                             f"search folder with cells/*/eval/samples.jsonl)")
        found += here
    return found


def safety_rows(folder: Path) -> list[dict]:
    """The answers to the safety benchmarks an eval folder stored (its samples.jsonl rows with a harm verdict)."""
    rows = []
    for i, line in enumerate((folder / "samples.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            raise InputError(f"{folder / 'samples.jsonl'}: line {i} is not JSON (expected the answers surgery eval "
                             f"stored)") from None
        if row.get("verdict") in ("harmful", "safe"):
            rows.append(row)
    return rows


def judge_file(spec: str) -> str:
    """The file stem of a judge's results: its kind, and for a model judge a digest of its path."""
    kind, _, path = spec.partition(":")
    return kind + (f"-{hashlib.sha256(path.encode()).hexdigest()[:8]}" if path else "")


def rejudge(folder: Path, judge, batch_size: int | str) -> dict:
    """Score one eval folder's stored answers with `judge`; write judges/<name>.jsonl and .json; the summary."""
    rows = safety_rows(folder)
    first = rows[0]["judge"] if rows else None
    if judge.name == first:
        raise InputError(f"{folder}: already judged by {judge.name} (its results in results.json stay as they are)")
    verdicts = judge.verdicts([r["prompt"] for r in rows], [r["response"] for r in rows], batch_size)
    judged = [{"run": r["run"], "benchmark": r["benchmark"], "verdict": "harmful" if h else "safe", "note": note,
               "score": judge_score(judge, note)} for r, (h, note) in zip(rows, verdicts)]
    runs: dict[tuple, list[bool]] = {}
    for r, j in zip(rows, judged):
        runs.setdefault((r["run"], r["adapter"], r["benchmark"]), []).append(j["verdict"] == "harmful")
    summary = {"judge": judge.name, "first_judge": first, "runs": [
        {"run": run, "adapter": adapter, "benchmark": bench, "n": len(v), "harmful": sum(v),
         "harmful_score": 100.0 * sum(v) / len(v), "ci95": wilson_percent(sum(v), len(v))}
        for (run, adapter, bench), v in runs.items()]}
    stem = folder / "judges" / judge_file(judge.name)
    atomic_write_text(stem.with_suffix(".jsonl"), "".join(json.dumps(j) + "\n" for j in judged))
    write_json(stem.with_suffix(".json"), summary)
    return summary


def other_judges(folder: Path) -> dict[str, list[dict]]:
    """The verdicts of every judge `surgery judge` added to an eval folder: judge name -> rows in safety order."""
    out = {}
    for summary in sorted((folder / "judges").glob("*.json")):
        name = read_json(summary, "a judge's results (surgery judge)").get("judge")
        rows = [json.loads(line) for line in summary.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines()]
        out[name] = rows
    return out
