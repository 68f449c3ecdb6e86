"""`surgery search --space KEY=LOW:HIGH[:log|:int] --space KEY=A,B,C`: the attacker's search space.

Each `--space` names one recipe key the attacker of a fine-tuning service controls (the learning rate, the
epochs or steps, the poison share, the LoRA rank, `lora.enabled` for full fine-tuning, the scheduler, the batch
size) and its range: a float range (on a log scale with `:log`), an integer range (`:int`), or a list of values
read as `--set` reads them. A defense's own keys (`surgery.alpha`) and the keys the search sets itself are the
defender's, and are refused; every value is checked against the recipe before any trial runs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from ..errors import InputError
from ..train.defenses import registry
from ..train.recipe import load_recipe

OWNED = {"defense.method": "--methods", "train.seed": "--seed and --confirm-seeds", "model.name": "the recipe",
         "output.dir": "--out"}  # set by the search itself


@dataclass(frozen=True)
class Param:
    """One key of the space: a float or integer range (`low`..`high`, `log`), or a list of `choices`."""

    key: str
    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial):
        """The trial's value for this key (Optuna draws it, or a retried trial gets its own back)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key} in {{{', '.join(map(_toml, self.choices))}}}"
        return f"{self.key} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "") + \
            (" (integers)" if self.kind == "int" else "")


def _toml(value) -> str:
    return "true" if value is True else "false" if value is False else f"{value}"


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{option}: {text!r} is not a number") from None


def parse_param(text: str) -> Param:
    """One `--space` text as a Param; InputError naming it when it is malformed or names a defender's key."""
    option = f"--space {text}"
    key, sep, spec = (part.strip() for part in text.partition("="))
    if not sep or "." not in key or not spec:
        raise InputError(f"{option}: expected SECTION.KEY=LOW:HIGH[:log|:int] or SECTION.KEY=A,B,C")
    section = key.partition(".")[0]
    if section in registry():
        raise InputError(f"{option}: {key} is the defense's own setting, chosen by the defender, not the attacker; "
                         f"give it with --grid or --set")
    if key in OWNED:
        raise InputError(f"{option}: the search sets {key} itself; use {OWNED[key]}")
    if ":" in spec:
        low, high, *flags = (p.strip() for p in spec.split(":"))
        if any(f not in ("log", "int") for f in flags) or len(flags) > 2:
            raise InputError(f"{option}: expected LOW:HIGH with :log and/or :int after it")
        lo, hi = _number(low, option), _number(high, option)
        kind = "int" if "int" in flags else "float"
        if kind == "int" and (lo != int(lo) or hi != int(hi)):
            raise InputError(f"{option}: an :int range needs whole numbers")
        if not lo < hi:
            raise InputError(f"{option}: LOW must be below HIGH")
        if "log" in flags and lo <= 0:
            raise InputError(f"{option}: a :log range needs LOW > 0")
        return Param(key, kind, lo, hi, "log" in flags)
    choices = tuple(_value(v.strip(), option) for v in spec.split(",") if v.strip())
    if len(choices) < 2 or len(set(map(repr, choices))) != len(choices):
        raise InputError(f"{option}: expected two or more distinct values")
    return Param(key, "choice", choices=choices)


def _value(text: str, option: str):
    """A choice as TOML reads it (true, 8, 2e-4, "cosine"), else the bare word as a string."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, (list, dict)):
        raise InputError(f"{option}: a choice must be a single value, got {text}")
    return value


def parse_space(texts: list[str], recipe, overrides: list[str]) -> list[Param]:
    """Every `--space` text parsed, and each range's ends (each choice) set in the recipe once, so a key the
    recipe does not have or a value it refuses fails here, before any trial."""
    if not texts:
        raise InputError("--space: give at least one key the attacker tunes, e.g. --space train.learning_rate=1e-5:1e-3:log")
    space = [parse_param(t) for t in texts]
    keys = [p.key for p in space]
    if len(set(keys)) != len(keys):
        raise InputError(f"--space: {next(k for k in keys if keys.count(k) > 1)} is given twice")
    for p in space:
        for value in (p.choices if p.kind == "choice" else (p.low, p.high)):
            value = int(value) if p.kind == "int" else value
            try:
                load_recipe(recipe, [*overrides, f"{p.key}={_set_text(value)}"], None, check_files=False)
            except InputError as e:
                raise InputError(f"--space {p.key}: {e}") from None
    return space


def _set_text(value) -> str:
    """A value as `--set` reads it back (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def overrides_of(params: dict) -> list[str]:
    """A trial's values as recipe overrides (`--set` texts)."""
    return [f"{key}={_set_text(value)}" for key, value in params.items()]
