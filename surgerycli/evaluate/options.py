"""The options of one evaluation, as one value shared by `surgery eval`, `surgery sweep` and `surgery demo`."""

from __future__ import annotations

from dataclasses import dataclass


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
