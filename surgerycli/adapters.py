"""The folders `surgery finetune` writes and `inspect`, `eval` and `merge` read: a peft adapter (or an output
folder holding one in adapter/), a fully fine-tuned model (model/), and what the run recorded about its base
model (recipe.resolved.toml). Header reads only: no weights load here."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .files import damaged_file, read_json, read_toml


def full_model_dir(path: str | Path) -> Path | None:
    """The model/ folder of a `surgery finetune` output of full fine-tuning, or None."""
    folder = Path(path) / "model"
    return folder if (folder / "config.json").is_file() and not (Path(path) / "adapter").is_dir() else None


def check_saved(folder: Path, config: str, what: str) -> Path:
    """`folder` when its config is a JSON object and no weights file in it is truncated; else an InputError
    naming the file (header reads only: the weights are not loaded here)."""
    if not isinstance(read_json(folder / config, what), dict):
        raise InputError(f"{folder / config}: expected a JSON object ({what})")
    for f in sorted(folder.iterdir()):
        if (why := damaged_file(f)) is not None:
            raise InputError(f"{f}: damaged ({why})")
    return folder


def adapter_dir(path: str) -> Path:
    """A peft adapter folder, or a `surgery finetune` output folder holding one in `adapter/`."""
    p = Path(path)
    for candidate in (p, p / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return check_saved(candidate, "adapter_config.json", "a peft adapter config")
    if full_model_dir(p) is not None:
        raise InputError(f"{path}: holds a fully fine-tuned model (model/), not a LoRA adapter: use the folder as a MODEL")
    raise InputError(f"{path}: not a peft adapter folder (no adapter_config.json here or in adapter/)")


def trained_record(folder: Path) -> tuple[str, str] | None:
    """(base model, system prompt) that a `surgery finetune` output records in recipe.resolved.toml, or None."""
    resolved = folder / "recipe.resolved.toml"
    if not resolved.is_file():
        return None
    recipe = read_toml(resolved, "the recipe a surgery finetune run wrote")
    if not isinstance(recipe.get("model"), dict) or not isinstance(recipe["model"].get("name"), str):
        raise InputError(f"{resolved}: no model.name, expected the recipe a surgery finetune run wrote")
    return recipe["model"]["name"], recipe.get("data", {}).get("system_prompt", "")


def adapter_base(adapter: str) -> tuple[str | None, str]:
    """(base model, system prompt) that a `surgery finetune` output folder records in recipe.resolved.toml,
    else the base_model_name_or_path of the adapter's config (and no system prompt)."""
    folder = adapter_dir(adapter)
    for candidate in (folder.parent, folder):  # the output folder, or its adapter/ given directly
        if (found := trained_record(candidate)) is not None:
            return found
    config = read_json(folder / "adapter_config.json", "a peft adapter config")
    if not isinstance(config, dict):
        raise InputError(f"{folder / 'adapter_config.json'}: expected a JSON object (a peft adapter config)")
    return config.get("base_model_name_or_path"), ""
