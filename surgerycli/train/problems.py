"""One recipe section validated, and its error messages: each problem as `SECTION.KEY: what was expected,
got VALUE`.

`expected` words a field's type and constraints; `section_problems` reads pydantic's errors for one
section; `file_problems` checks that the files, models and templates a section names exist; `section`
does both for one section and `build_sections` for several (the Python API's defense objects).
"""

from __future__ import annotations

import json
import typing
from typing import Literal

import annotated_types as at
from pydantic import ValidationError

from pathlib import Path

from ..data.pairs import BUILTIN_PAIRS
from ..data.refsets import BUILTIN_REFSETS
from ..data.rows import source_exists
from ..errors import InputError
from ..models import read_chat_template, resolve
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
    if kind == "file" and not source_exists(value):
        return "no such file or dataset folder"
    if kind in BUILTIN_NAMES and value not in BUILTIN_NAMES[kind] and not source_exists(value):
        return f"no such file or dataset folder (or use {' / '.join(map(show, BUILTIN_NAMES[kind]))})"
    if kind == "template":
        try:
            read_chat_template(value, "")
        except InputError as e:
            return str(e).removeprefix(f" {value}: ")
    if kind == "model":
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


def validate_section(name: str, cls: type[Section], given: dict,
                     check_files: bool) -> tuple[Section | None, list[str]]:
    """(the section, or None when its types are wrong; every problem of it, each with its key path)."""
    try:
        built, bad, problems = cls(**given), set(), []
    except ValidationError as e:
        built, problems = None, section_problems(name, cls, given, e)
        bad = {str(x["loc"][0]) for x in e.errors() if x["loc"]}
    if check_files:  # also for the keys that passed when another key of the section failed
        problems += file_problems(name, cls, {k: v for k, v in given.items() if k not in bad})
    return built, problems


def build_sections(owner: str, parts: dict[str, tuple[type[Section], dict]]) -> dict[str, Section]:
    """Sections from keyword values ({name: (class, values)}), validated as the recipe's are (same defaults,
    same one-line errors, every problem at once, prefixed by `owner`), local paths made absolute: what the
    Python API's defense objects are built from."""
    sections, problems = {}, []
    for name, (cls, values) in parts.items():
        built, found = validate_section(name, cls, values, check_files=True)
        problems += found
        if built is not None:
            sections[name] = built.model_copy(update=absolute_paths(built))
    if problems:
        raise InputError(f"{owner}: " + "; ".join(problems))
    return sections


def absolute(value: str | None) -> str | None:
    """A local path as an absolute one (the resolved recipe works from anywhere); other values as they are."""
    if value and not any(value in names for names in BUILTIN_NAMES.values()) and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())
    return value


def absolute_paths(section: Section) -> dict[str, str | None]:
    """The section's fields that name local files, made absolute."""
    return {k: absolute(getattr(section, k)) for k, info in type(section).model_fields.items()
            if any(isinstance(m, Exists) and m.kind in ("file", "template", *BUILTIN_NAMES) for m in info.metadata)}
