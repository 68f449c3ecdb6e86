"""The one reader behind every data file of `surgery` (finetune, inspect, eval, sweep): rows with locations.

  .txt      one row per non-empty line: {"prompt": line}
  .jsonl    one JSON object per line
  .json     a JSON list of objects
  .csv      one object per row, keyed by the header
  .parquet  one object per row (read with pyarrow)
  a folder  written by `datasets`' `Dataset.save_to_disk` (one split)
  hub:ID?name=SUBSET&split=SPLIT   a hub dataset, loaded by `datasets.load_dataset` only when named
            (a recipe writes it as a table: {path = "openai/gsm8k", name = "main", split = "train"})

Every row carries `where` (`file:line`, `file[i]` in a .json list, a .parquet, a dataset folder or a hub
dataset) so errors name the exact row.

The one `is_safe` policy (BeaverTails holds safe and unsafe rows in one file): a row's `is_safe`, when
present, must be true or false; read as a harmful set, rows with `is_safe: true` are dropped; read as a
harmless set, rows with `is_safe: false` are dropped; rows without the field are always kept.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InputError
from ..files import read_text

Role = Literal["harmful", "harmless"] | None
ALL_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # rows with named fields (not .txt lines)
HUB = "hub:"
HUB_KEYS = ("path", "name", "split", "revision")


def hub_source(spec: dict) -> str:
    """A recipe's hub table {path, name, split, revision} as the source text `hub:PATH?name=..&split=..`;
    ValueError naming what is wrong."""
    from urllib.parse import urlencode

    unknown = set(spec) - set(HUB_KEYS)
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r} in a hub dataset (expected {', '.join(HUB_KEYS)})")
    if not all(isinstance(v, str) and v for v in spec.values()) or "path" not in spec:
        raise ValueError("a hub dataset needs a non-empty string `path` (and optional `name`, `split`, `revision`)")
    query = {k: spec[k] for k in HUB_KEYS[1:] if k in spec}
    return HUB + spec["path"] + (f"?{urlencode(query)}" if query else "")


def parse_hub(source: str) -> dict:
    """`hub:PATH?name=..&split=..` -> {"path", "name", "split" (default "train"), "revision"}."""
    from urllib.parse import parse_qs

    path, _, query = source.removeprefix(HUB).partition("?")
    args = {k: v[-1] for k, v in parse_qs(query).items()}
    return {"path": path, "name": args.get("name"), "split": args.get("split", "train"), "revision": args.get("revision")}


def is_dataset_folder(path: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (a Dataset, or a DatasetDict of them)."""
    return path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))


def source_exists(source: str) -> bool:
    """A file, a save_to_disk folder, or a hub dataset (which only the hub can confirm: taken as existing)."""
    path = Path(source).expanduser()
    return source.startswith(HUB) or path.is_file() or is_dataset_folder(path)


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


def _text(path: Path) -> str:
    return read_text(path, f"a UTF-8 {path.suffix or 'text'} file")


def _csv_rows(path: Path) -> list[Row]:
    text = _text(path)
    if "\0" in text:
        raise InputError(f"{path}: holds NUL bytes (a binary file?); expected CSV text")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = [Row(f"{path}:{reader.line_num}", dict(r)) for r in reader]
    except csv.Error as e:
        raise InputError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    width = len(reader.fieldnames or [])
    for row in rows:  # DictReader fills a short row with None and keys a long one's rest by None
        if None in row.fields or any(v is None for v in row.fields.values()):
            n = sum(v is not None for k, v in row.fields.items() if k is not None) + len(row.fields.get(None) or [])
            raise InputError(f"{row.where}: {n} fields, the header has {width} (a truncated or damaged file?)")
    for row in rows:  # CSV has no booleans: read the policy's field from its spelling
        value = row.fields.get("is_safe")
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            row.fields["is_safe"] = value.strip().lower() == "true"
    return rows


def csv_header(path: Path) -> list[str]:
    try:
        return csv.DictReader(io.StringIO(_text(path), newline="")).fieldnames or []
    except csv.Error as e:
        raise InputError(f"{path}: not valid CSV ({e})") from None


def _keep(row: Row, role: Role) -> bool:
    if "is_safe" not in row.fields:
        return True
    is_safe = row.fields["is_safe"]
    if not isinstance(is_safe, bool):
        raise InputError(f"{row.where}: `is_safe` must be true or false, got {is_safe!r}")
    return role is None or is_safe == (role == "harmless")


def _hub_rows(source: str) -> list[Row]:
    import datasets

    spec = parse_hub(source)
    try:
        ds = datasets.load_dataset(spec["path"], spec["name"], split=spec["split"], revision=spec["revision"])
    except Exception as e:  # noqa: BLE001 - the hub's errors are many; the user needs the line
        raise InputError(f"{source}: cannot load the hub dataset ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return [Row(f"{source} row {i}", dict(r)) for i, r in enumerate(ds)]


def _disk_rows(path: Path) -> list[Row]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - datasets' and arrow's errors for a damaged folder vary
        line = next((x for x in str(e).splitlines() if x.strip()), "")
        raise InputError(f"{path}: not a readable dataset folder ({type(e).__name__}: {line})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise InputError(f"{path}: a DatasetDict with splits {', '.join(ds)}: name one split's folder, "
                         f"e.g. {path / next(iter(ds))}")
    return [Row(f"{path} row {i}", dict(r)) for i, r in enumerate(ds)]


def _parquet_rows(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow's errors for a damaged file vary
        raise InputError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    return [Row(f"{path} row {i}", r) for i, r in enumerate(table.to_pylist())]


def read_rows(path: str | Path, suffixes: tuple[str, ...] = ALL_SUFFIXES, role: Role = None) -> list[Row]:
    """Every row of a data source (kept by the `is_safe` policy for `role`); InputError naming source and row.

    A hub dataset (`hub:...`) and a save_to_disk folder are read whatever `suffixes` allows of files."""
    if str(path).startswith(HUB):
        return _checked(_hub_rows(str(path)), role)
    path = Path(path).expanduser()
    if is_dataset_folder(path):
        return _checked(_disk_rows(path), role)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix not in suffixes:
        raise InputError(f"{path}: unknown format {path.suffix!r}: expected {', '.join(suffixes[:-1])}"
                         f"{' or ' if len(suffixes) > 1 else ''}{suffixes[-1]}")
    if path.suffix == ".csv":
        rows = _csv_rows(path)
    elif path.suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        text = _text(path)
        if path.suffix == ".txt":
            rows = [Row(f"{path}:{n}", {"prompt": line.strip()})
                    for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        else:
            rows = _json_lines(path, text) if path.suffix == ".jsonl" else _json_list(path, text)
    return _checked(rows, role)


def _checked(rows: list[Row], role: Role) -> list[Row]:
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
