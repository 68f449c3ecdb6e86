"""The one reader behind every data file of `surgery` (finetune, inspect, eval, sweep): rows with locations.

  .txt    one row per non-empty line: {"prompt": line}
  .jsonl  one JSON object per line
  .json   a JSON list of objects
  .csv    one object per row, keyed by the header

Every row carries `where` (`file:line`, or `file[i]` in a .json list) so errors name the exact row.

The one `is_safe` policy (BeaverTails holds safe and unsafe rows in one file): a row's `is_safe`, when
present, must be true or false; read as a harmful set, rows with `is_safe: true` are dropped; read as a
harmless set, rows with `is_safe: false` are dropped; rows without the field are always kept.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InputError

Role = Literal["harmful", "harmless"] | None
ALL_SUFFIXES = (".txt", ".jsonl", ".json", ".csv")


@dataclass(frozen=True)
class Row:
    where: str  # file:line
    fields: dict


def _json_lines(path: Path, text: str) -> list[Row]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(Row(f"{path}:{n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def _json_list(path: Path, text: str) -> list[Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return [Row(f"{path}[{i}]", row) for i, row in enumerate(data)]


def _csv_rows(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [Row(f"{path}:{reader.line_num}", dict(r)) for r in reader]
    for row in rows:  # CSV has no booleans: read the policy's field from its spelling
        value = row.fields.get("is_safe")
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            row.fields["is_safe"] = value.strip().lower() == "true"
    return rows


def csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return csv.DictReader(f).fieldnames or []


def _keep(row: Row, role: Role) -> bool:
    if "is_safe" not in row.fields:
        return True
    is_safe = row.fields["is_safe"]
    if not isinstance(is_safe, bool):
        raise InputError(f"{row.where}: `is_safe` must be true or false, got {is_safe!r}")
    return role is None or is_safe == (role == "harmless")


def read_rows(path: str | Path, suffixes: tuple[str, ...] = ALL_SUFFIXES, role: Role = None) -> list[Row]:
    """Every row of a data file (kept by the `is_safe` policy for `role`); InputError naming file and line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix not in suffixes:
        raise InputError(f"{path}: unknown format {path.suffix!r}: expected {', '.join(suffixes[:-1])}"
                         f"{' or ' if len(suffixes) > 1 else ''}{suffixes[-1]}")
    if path.suffix == ".csv":
        rows = _csv_rows(path)
    else:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".txt":
            rows = [Row(f"{path}:{n}", {"prompt": line.strip()})
                    for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        else:
            rows = _json_lines(path, text) if path.suffix == ".jsonl" else _json_list(path, text)
    for row in rows:
        if not isinstance(row.fields, dict):
            raise InputError(f"{row.where}: expected a JSON object, got {type(row.fields).__name__}")
    return [r for r in rows if _keep(r, role)]


def field(row: Row, key: str, kind: type = str):
    """row.fields[key], checked to be of `kind`; InputError naming the row otherwise."""
    value = row.fields.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{row.where}: expected a {kind.__name__} field `{key}`, got keys {sorted(row.fields)}")
    return value
