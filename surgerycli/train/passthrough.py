"""`surgery finetune`: the recipe's `[trainer]` table, passed to transformers' TrainingArguments as is.

For what the recipe does not name (`optim = "paged_adamw_8bit"`, `tf32`, `torch_compile`, `eval_strategy`,
`push_to_hub`, ...). Checked when the recipe loads: every key must be a TrainingArguments field, keys the
recipe already owns are refused with a pointer to their section, and values are checked against the field's
type (and enum values). What only this machine can judge (`tf32 = true` needs an Ampere GPU) is checked
when TrainingArguments is built, with the same `trainer.KEY` wording.
"""

from __future__ import annotations

import enum
import types
import typing

OWNED = {  # TrainingArguments field -> where the recipe sets it
    "output_dir": "output.dir", "num_train_epochs": "train.epochs", "max_steps": "train.max_steps",
    "learning_rate": "train.learning_rate", "lr_scheduler_type": "train.lr_scheduler",
    "warmup_steps": "train.warmup_ratio", "warmup_ratio": "train.warmup_ratio", "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm", "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum", "seed": "train.seed", "data_seed": "train.seed",
    "gradient_checkpointing": "train.gradient_checkpointing", "activation_checkpointing": "train.gradient_checkpointing",
    "gradient_checkpointing_kwargs": "train.gradient_checkpointing",
    "activation_checkpointing_kwargs": "train.gradient_checkpointing",
    "logging_steps": "train.logging_steps", "save_steps": "train.save_steps", "save_strategy": "train.save_steps",
    "save_total_limit": "train.save_total_limit", "report_to": "train.report_to", "run_name": "train.run_name",
    "bf16": "model.dtype", "fp16": "model.dtype", "use_cpu": "the device (surgery picks it)",
    "remove_unused_columns": "surgery itself (the defenses read every column)",
    "disable_tqdm": "surgery itself (it shows its own progress bar)",
}


def _fields() -> dict[str, object]:
    from transformers import TrainingArguments

    return typing.get_type_hints(TrainingArguments)


def _accepts(tp: object, value: object) -> str | None:
    """None when `value` fits the annotation `tp`, else what was expected (loose on what it cannot judge)."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    wants = []
    for t in options:
        origin = typing.get_origin(t) or t
        if t is type(None):
            continue
        if isinstance(t, type) and issubclass(t, enum.Enum):
            values = [e.value for e in t]
            if value in values:
                return None
            wants.append(f"one of {', '.join(map(str, values[:12]))}" + (", ..." if len(values) > 12 else ""))
        elif t is bool:
            if isinstance(value, bool):
                return None
            wants.append("true or false")
        elif t in (int, float):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (t is float or isinstance(value, int)):
                return None
            wants.append("an integer" if t is int else "a number")
        elif t is str:
            if isinstance(value, str) and not any(isinstance(o, type) and issubclass(o, enum.Enum) for o in options):
                return None
            if not isinstance(value, str):
                wants.append("a string")
        elif origin in (list, dict):
            if isinstance(value, origin):
                return None
            wants.append("a list" if origin is list else "a table")
        else:
            return None  # a type this check does not know: TrainingArguments judges it
    return f"expected {' or '.join(dict.fromkeys(wants))}" if wants else None


def trainer_problems(table: object) -> list[str]:
    """Every problem of a `[trainer]` table, each as `trainer.KEY: ...`."""
    if not isinstance(table, dict):
        return [f"trainer: expected a [trainer] table of TrainingArguments keys, got {table!r}"]
    fields = _fields()
    problems = []
    for key, value in table.items():
        if key in OWNED:
            problems.append(f"trainer.{key}: set by the recipe, not [trainer]: use {OWNED[key]}")
        elif key not in fields:
            problems.append(f"trainer.{key}: not a transformers TrainingArguments field")
        elif (why := _accepts(fields[key], value)) is not None:
            problems.append(f"trainer.{key}: {why}, got {value!r}")
    return problems
