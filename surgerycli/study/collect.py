"""`surgery report SWEEP_DIR [SWEEP_DIR ...]`: read finished (or still running) sweep folders and merge them
into one sweep record, so sweeps run at different times share one table."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..files import read_json
from .layout import before_file, before_files


def _read_json(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """A sweep file's object, with `keys`; InputError naming the file when it is unreadable or not one."""
    data = read_json(path, "a sweep file of this tool")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise InputError(f"{path}: not a sweep file of this tool (expected a JSON object with {', '.join(keys)})")
    return data


CELL_KEYS = ("name", "status", "method", "poison_ratio")
BASE_KEYS = ("model", "harmful_score", "accuracy")  # the scores before the attack


def read_sweep(folder: Path) -> dict:
    """A sweep folder's record: its sweep.json with every other finished cells/*/cell.json after its cells
    (several sweeps may run into one folder: each sweep.json lists only the last one's grid), or, for a sweep
    still running or interrupted and for a search folder (whose search.json names the recipe), its base.json
    and the finished cells. InputError for a folder with no sweep."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such sweep folder")
    cells = [_read_json(p, CELL_KEYS) for p in sorted(folder.glob("cells/*/cell.json"))]
    if (folder / "sweep.json").is_file():
        sweep = _read_json(folder / "sweep.json", ("cells", "base"))
        if not isinstance(sweep["cells"], list) or not all(isinstance(c, dict) and "name" in c for c in sweep["cells"]):
            raise InputError(f"{folder / 'sweep.json'}: `cells` is not a list of cells")
        if not isinstance(sweep["base"], dict) or any(k not in sweep["base"] for k in BASE_KEYS):
            raise InputError(f"{folder / 'sweep.json'}: `base` is not a model's scores (expected {', '.join(BASE_KEYS)})")
        listed = {c["name"] for c in sweep["cells"]}
        return {**sweep, "cells": sweep["cells"] + [c for c in cells if c["name"] not in listed]}
    if not before_file(folder).is_file() or not cells:
        raise InputError(f"{folder}: not a sweep folder (expected sweep.json, or base.json and cells/*/cell.json)")
    search = _read_json(folder / "search.json", ("recipe",)) if (folder / "search.json").is_file() else {}
    return {"recipe": search.get("recipe"), "overrides": search.get("overrides", []),
            "base": _read_json(before_file(folder), BASE_KEYS), "aligned_before": aligned_before(folder),
            "align_recipe": None, "cells": cells, "judge": _cell_judge(folder, cells)}


def aligned_before(folder: Path) -> dict[str, dict]:
    """The scores before the attack of each model an alignment-stage defense aligned (base-<method>.json, written
    by an unfinished sweep or by `surgery search`, whose sweep.json never lists them)."""
    return {align: _read_json(p, BASE_KEYS) for align, p in before_files(folder).items()}


def _cell_judge(folder: Path, cells: list[dict]) -> str | None:
    """The judge an unfinished sweep's cells were scored by (its sweep.json, which names it, comes last)."""
    for c in cells:
        results = folder / "cells" / c["name"] / "eval" / "results.json"
        if c["status"] == "ok" and results.is_file():
            runs = _read_json(results, ("runs",))["runs"]
            safety = runs[0].get("safety") if isinstance(runs, list) and runs and isinstance(runs[0], dict) else None
            if not isinstance(safety, dict):
                raise InputError(f"{results}: no `runs[0].safety` (expected the results.json of surgery eval)")
            return next(iter(safety.values())).get("judge") if safety else None
    return None


def merge_sweeps(folders: list[Path], out: Path) -> tuple[dict, list[str], str | None]:
    """(one sweep record holding every folder's cells, notes for the user, the judge). The first folder gives the base
    row. Sweeps judged by different judges do not merge (InputError); a cell name found in two folders keeps
    the later folder's cell, and says so. Each cell names the sweep folder it ran in (`sweep`; a report folder
    passes on its cells' own), and every path in the record is written relative to `out`, where the record is
    written: a committed report names no machine's paths."""
    sweeps = [(f, read_sweep(f)) for f in folders]
    judges = {s["judge"] for _, s in sweeps if s.get("judge")}
    if len(judges) > 1:
        raise InputError(f"{', '.join(map(str, folders))}: judged by different judges ({', '.join(sorted(judges))}); "
                         f"scores from different judges do not share a table")
    cells: dict[str, dict] = {}
    notes = []
    for folder, s in sweeps:
        for c in s["cells"]:
            if c["name"] in cells:
                notes.append(f"cell {c['name']}: found again in {folder}; that one is used")
            origin = c.get("sweep")  # relative to the report folder it was merged into before
            cells[c["name"]] = {**c, "sweep": str(Path(folder, origin)) if origin else str(folder)}
    first = sweeps[0][1]
    recipes = list(dict.fromkeys(str(s["recipe"]) for _, s in sweeps if s.get("recipe")))
    merged = {"recipe": ", ".join(recipes) or "(unfinished sweeps)", "overrides": first.get("overrides", []),
              "base": first["base"], "aligned_before": first.get("aligned_before", {}),
              "align_recipe": first.get("align_recipe"), "cells": list(cells.values()),
              "sweeps": [str(f) for f in folders]}
    return relative_paths(merged, Path(out).resolve()), notes, next(iter(judges), None)


def relative_paths(value, out: Path):
    """`value` (a sweep record, or any part of it) with every path in it, and in every `KEY=PATH` override,
    written relative to `out` (an absolute one too: a report copied off its machine then names none of it)."""
    if isinstance(value, dict):
        return {k: relative_paths(v, out) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, out) for v in value]
    if not isinstance(value, str):
        return value
    key, eq, rest = value.partition("=")
    if eq and "." in key and " " not in key and _is_path(rest):
        return f"{key}={os.path.relpath(Path(rest).resolve(), out)}"
    return os.path.relpath(Path(value).resolve(), out) if _is_path(value) else value


def _is_path(text: str) -> bool:
    """A string that names a file or folder: absolute, or one that exists here (a bare word does not count)."""
    return os.path.isabs(text) or ("/" in text and Path(text).exists())
