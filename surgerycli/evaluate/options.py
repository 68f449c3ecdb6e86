"""The options of one evaluation, as one value shared by `surgery eval`, `surgery sweep` and `surgery demo`,
and the presets that set several at once (options given explicitly win over a preset).

`resolve_options` parses the command-line texts once, completely: benchmark and task names as tuples, NAME=PATH
options as pairs, the judge's kind checked, so a sweep's cells never parse them again."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

# --preset surgery-paper: the evaluation of Lslland/Surgery poison/evaluation/pred.py (as git-disl/Booster's):
# the Alpaca template, BeaverTails 30k_test rows unfiltered, the first 1000 prompts, inputs cut at 512
# tokens, up to 512 new tokens, greedy.
PRESETS = {
    "surgery-paper": {"prompt_format": "alpaca", "beavertails_rows": "all", "limit": 1000, "max_new_tokens": 512,
                      "max_input_tokens": 512},
}
CHOICES = {"prompt_format": ("chat", "alpaca"), "beavertails_rows": ("unsafe", "all"),
           "decode": ("auto", "continuous", "static", "fixed")}  # decode: the paths of generation.generate_ids


@dataclass(frozen=True)
class EvalOptions:
    safety: tuple[str, ...] = ("harmbench",)  # the benchmarks run, those given local data included
    safety_data: tuple[tuple[str, str], ...] = ()  # (benchmark, local file)
    judge: str = "keyword"  # `keyword` or KIND:PATH, its kind checked
    tasks: tuple[str, ...] = ()  # lm-eval or built-in task names
    task_data: tuple[tuple[str, str], ...] = ()  # (built-in task, local file)
    limit: int | None = None
    batch_size: int | str = "auto"  # rows generating at once, or auto: as many as the free memory holds
    max_new_tokens: int = 256
    decode: str = "auto"  # auto (continuous where the cache allows it, else fixed) | continuous | static | fixed
    prompt_format: str = "chat"  # chat | alpaca
    beavertails_rows: str = "unsafe"  # unsafe | all
    max_input_tokens: int | None = None  # cut each input to its first N tokens
    preset: str | None = None


def parse_pairs(values: list[str] | tuple[str, ...], option: str) -> tuple[tuple[str, str], ...]:
    """NAME=PATH options as (name, path) pairs, the last one of a name winning; InputError naming the option."""
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"{option} {value!r}: expected NAME=PATH")
        pairs[name.strip()] = path.strip()
    return tuple(pairs.items())


def batch_size(text: str | int) -> int | str:
    """`--batch-size`: `auto` or a whole number >= 1."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(str(text))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"--batch-size {text}: expected auto or a whole number >= 1")
    return value


def names(text: str) -> tuple[str, ...]:
    """Comma-separated names (`none`: none)."""
    return () if text.strip().lower() == "none" else tuple(n.strip() for n in text.split(",") if n.strip())


def resolve_options(preset: str | None = None, *, safety: str = "harmbench", safety_data: list[str] | tuple = (),
                    judge: str = "keyword", tasks: str = "", task_data: list[str] | tuple = (), **given) -> EvalOptions:
    """EvalOptions from the command-line texts (None: not given), the preset's values, then the defaults; every
    text parsed and checked here (InputError naming the option)."""
    from ..data.safety import BENCHMARKS
    from .judges import JUDGES

    if preset is not None and preset not in PRESETS:
        raise InputError(f"--preset {preset}: unknown preset (expected one of {', '.join(PRESETS)})")
    values = {**PRESETS.get(preset, {}), **{k: v for k, v in given.items() if v is not None}}
    for key, choices in CHOICES.items():
        if key in values and values[key] not in choices:
            raise InputError(f"--{key.replace('_', '-')} {values[key]}: expected one of {', '.join(choices)}")
    if "batch_size" in values:
        values["batch_size"] = batch_size(values["batch_size"])
    data = parse_pairs(safety_data or (), "--safety-data")
    benchmarks = tuple(dict.fromkeys(names(safety) + tuple(n for n, _ in data)))
    unknown = [n for n in benchmarks if n not in BENCHMARKS]
    if unknown:
        raise InputError(f"--safety: unknown benchmark {unknown[0]!r} (expected {', '.join(BENCHMARKS)})")
    if judge != "keyword" and judge.partition(":")[0] not in JUDGES:
        raise InputError(f"--judge {judge}: unknown judge (expected keyword, {', '.join(k + ':PATH' for k in JUDGES)})")
    return EvalOptions(safety=benchmarks, safety_data=data, judge=judge, tasks=names(tasks),
                       task_data=parse_pairs(task_data or (), "--task-data"), preset=preset, **values)
