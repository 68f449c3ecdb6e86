"""`surgery merge ADAPTER --out DIR`: the command; the work is `models.merge_adapter`.

The two-stage protocol needs it: the alignment stage's adapter is merged, and the merged folder is the
model the attack stage fine-tunes, inspects and evaluates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import fail


def merge(
    adapter: Annotated[str, typer.Argument(help="peft adapter folder or `surgery finetune` output folder.")],
    out: Annotated[Path, typer.Option(help="Folder for the merged model (config, safetensors, tokenizer).")],
    base: Annotated[str | None, typer.Option(help="Base model; default: the one the finetune output records.")] = None,
    dtype: Annotated[str, typer.Option(help="auto (float32 on CPU), bfloat16, float16, float32.")] = "auto",
) -> None:
    """Fold a LoRA adapter into its base model and save a plain Hugging Face model folder.

    The two-stage protocol's step between alignment and attack: the merged folder is then a MODEL for finetune, inspect and eval.

    Manual: docs/sweeps.md.
    """
    import torch
    from rich.console import Console

    from ..errors import InputError
    from ..models import merge_adapter, pick_dtype

    console = Console()
    try:
        with console.status(f"merging {adapter}"):
            base_name = merge_adapter(adapter, out, base, pick_dtype(dtype, torch.device("cpu"), "--dtype"))
    except InputError as e:
        raise fail(e) from None
    console.print(f"merged {adapter} into {base_name}: {out}")
