"""The recipe's error messages: each problem as `SECTION.KEY: what was expected, got VALUE`.

`expected` words a field's type and constraints; `section_problems` reads pydantic's errors for one
section; `file_problems` checks that the files, models and templates a section names exist.
"""

from __future__ import annotations

import json
import typing
from typing import Literal

import annotated_types as at
from pydantic import ValidationError

from ..data.pairs import BUILTIN_PAIRS
from ..data.refsets import BUILTIN_REFSETS
from ..errors import InputError
from .sections import Exists, Expect, Section


BUILTIN_NAMES = {"refset": BUILTIN_REFSETS, "pairs": BUILTIN_PAIRS}  # Exists kinds that also take built-in names
REMOVED = {("surgery", "enabled"): 'removed: choose the method with [defense] method = "surgery" or "sft" '
                                   '(no defense)',
           # the sink measurement's settings serve every method, so they left Surgery's own section
           **{("surgery", old): f"moved: [measure] {new} (the sink measurement's settings, for every method)"
              for old, new in (("sink_position", "sink_position"), ("harmful_reference", "harmful_reference"),
                               ("harmless_reference", "harmless_reference"), ("reference_rows", "reference_rows"),
                               ("max_length", "max_length"), ("measure_samples", "samples"))}}


def show(value: object) -> str:
    """A value as the recipe spells it (JSON for strings, numbers, booleans and lists)."""
    return json.dumps(value) if isinstance(value, (str, bool, int, float, list)) else repr(value)


def expected(info) -> str:
    """What a field accepts, in words, from its type and constraints."""
    custom = next((m.text for m in info.metadata if isinstance(m, Expect)), None)
    if custom:
        return f"expected {custom}"
    types = [t for t in typing.get_args(info.annotation) or (info.annotation,) if t is not type(None)]
    if typing.get_origin(info.annotation) is Literal:
        return f"expected one of {', '.join(map(show, typing.get_args(info.annotation)))}"
    if types[0] is bool:
        return "expected true or false"
    if types[0] in (int, float):
        bounds = []
        for m in info.metadata:
            for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if isinstance(m, getattr(at, attr.capitalize())):
                    bounds.append(f"{op} {getattr(m, attr):g}")
        noun = "an integer" if types[0] is int else "a number"
        return f"expected {noun}" + (f" {' and '.join(bounds)}" if bounds else "")
    return "expected a string"


def section_problems(name: str, cls: type[Section], given: dict, error: ValidationError) -> list[str]:
    """One line per bad key of a section that failed validation: unknown, missing, or of the wrong type."""
    problems, seen = [], set()
    for e in error.errors():
        key = str(e["loc"][0]) if e["loc"] else ""
        if key in seen:
            continue  # a union reports once per member
        seen.add(key)
        if e["type"] == "extra_forbidden":
            hint = REMOVED.get((name, key)) or f"unknown key (expected one of {', '.join(cls.model_fields)})"
            problems.append(f"{name}.{key}: {hint}")
        elif e["type"] == "missing":
            problems.append(f"{name}.{key}: required, missing")
        else:
            problems.append(f"{name}.{key}: {expected(cls.model_fields[key])}, got {show(given[key])}")
    return problems


def _exists(kind: str, value: str) -> str | None:
    """None when what `value` names exists, else what was expected."""
    from ..data.rows import source_exists

    if kind == "file" and not source_exists(value):
        return "no such file or dataset folder"
    if kind in BUILTIN_NAMES and value not in BUILTIN_NAMES[kind] and not source_exists(value):
        return f"no such file or dataset folder (or use {' / '.join(map(show, BUILTIN_NAMES[kind]))})"
    if kind == "template":
        from ..models import read_chat_template

        try:
            read_chat_template(value, "")
        except InputError as e:
            return str(e).removeprefix(f" {value}: ")
    if kind == "model":
        from ..models import resolve

        try:
            resolve(value)
        except InputError as e:
            return str(e).removeprefix(f"{value}: ")
    return None


def file_problems(name: str, cls: type[Section], values: dict) -> list[str]:
    """What `values` (keys that passed type checks) name that does not exist."""
    problems = []
    for key, info in cls.model_fields.items():
        value = values.get(key)
        for m in info.metadata:
            # a hub table (a dict) names a hub dataset: only the hub can tell whether it exists
            if isinstance(m, Exists) and isinstance(value, str) and (error := _exists(m.kind, value)):
                problems.append(f"{name}.{key}: {error}, got {show(value)}")
    return problems
