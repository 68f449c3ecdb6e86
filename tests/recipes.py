"""The one way tests write a recipe: each section as a dict, written with the resolved recipe's own TOML
writer (`surgerycli.train.recipe.toml_value`), over small defaults that a tiny model trains with in seconds."""

from __future__ import annotations

from pathlib import Path

from surgerycli.train.recipe import toml_value

TINY = {"lora": {"r": 4}, "measure": {"samples": 2},
        "train": {"batch_size": 4, "max_length": 64, "logging_steps": 1, "max_steps": 2}}


def write_recipe(path: Path, model_name: Path | str, data: dict | None = None, **sections: dict) -> Path:
    """A recipe at `path` fine-tuning `model_name` on `data` (the [data] section), with TINY's settings and then
    `sections`' keys (a key given here replaces TINY's; None leaves a key out)."""
    merged: dict[str, dict] = {"model": {"name": str(model_name)}, "data": dict(data or {})}
    for name, keys in {**{k: {} for k in TINY}, **sections}.items():
        merged[name] = {**TINY.get(name, {}), **merged.get(name, {}), **keys}
    lines = []
    for name, keys in merged.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(str(v) if isinstance(v, Path) else v)}" for k, v in keys.items()
                                 if v is not None), ""]
    path.write_text("\n".join(lines))
    return path


def data_of(folder: Path, poison_ratio: float = 0.2, num_samples: int = 20, **extra) -> dict:
    """The [data] section of the finetune fixture's files (conftest.finetune_data): arithmetic and harmful pairs."""
    return {"benign": folder / "gsm.jsonl", "harmful": folder / "harm.jsonl", "poison_ratio": poison_ratio,
            "num_samples": num_samples, **extra}
