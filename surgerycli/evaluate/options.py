"""The options of one evaluation, as one value shared by `surgery eval`, `surgery sweep` and `surgery demo`,
and the presets that set several at once (options given explicitly win over a preset)."""

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
CHOICES = {"prompt_format": ("chat", "alpaca"), "beavertails_rows": ("unsafe", "all")}


@dataclass(frozen=True)
class EvalOptions:
    safety: str = "harmbench"  # comma-separated benchmark names, or `none`
    safety_data: tuple[str, ...] = ()  # NAME=PATH
    judge: str = "keyword"
    tasks: str = ""  # comma-separated lm-eval or built-in task names
    task_data: tuple[str, ...] = ()  # NAME=PATH
    limit: int | None = None
    batch_size: int = 32
    max_new_tokens: int = 256
    prompt_format: str = "chat"  # chat | alpaca
    beavertails_rows: str = "unsafe"  # unsafe | all
    max_input_tokens: int | None = None  # cut each input to its first N tokens
    preset: str | None = None


def resolve_options(preset: str | None = None, **given) -> EvalOptions:
    """EvalOptions from the options given (None: not given), the preset's values, then the defaults."""
    if preset is not None and preset not in PRESETS:
        raise InputError(f"--preset {preset}: unknown preset (expected one of {', '.join(PRESETS)})")
    values = {**PRESETS.get(preset, {}), **{k: v for k, v in given.items() if v is not None}}
    for key, choices in CHOICES.items():
        if key in values and values[key] not in choices:
            raise InputError(f"--{key.replace('_', '-')} {values[key]}: expected one of {', '.join(choices)}")
    return EvalOptions(preset=preset, **values)
