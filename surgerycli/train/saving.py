"""`surgery finetune`: the trained model written into the output folder, whole or not at all."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..files import save_folder


def save_trained(model, tokenizer, out: Path, lora: bool, state_dict: dict | None = None, suffix: str = "") -> Path:
    """adapter/ (LoRA) or model/ (full fine-tuning: a Hugging Face folder with its tokenizer, sharded as
    transformers saves), and tokenizer/; each written beside and renamed into place. The trained folder.
    `state_dict`: the whole model's weights, gathered from FSDP's shards; `suffix`: appended to the folder's
    name (`-trained`: the model as trained, before a post-fine-tuning defense repaired it)."""
    folder = out / (("adapter" if lora else "model") + suffix)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
        if not lora:
            tokenizer.save_pretrained(tmp)

    save_folder(folder, save)
    save_folder(out / "tokenizer", tokenizer.save_pretrained)
    if not lora:  # a run that switched from LoRA to full fine-tuning leaves no stale adapter behind
        shutil.rmtree(out / "adapter", ignore_errors=True)
    return folder
