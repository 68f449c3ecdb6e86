"""`surgery data demo --written-tokens N`: the harmful answers the packaged, unaligned SmolLM2 writes itself
(`data.written` says why, and what the file holds): generated greedily, refusals dropped."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..models import load_model
from .generation import generate
from .judges import is_refusal
from .prompts import prompt_text


def write_answers(
    prompts: list[str], model_name: str, *, max_new_tokens: int, batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None, loaded: tuple | None = None,
) -> tuple[list[dict[str, str]], dict]:
    """(rows {prompt, response} the model complied with, counts and time for the manifest). `loaded`: the
    (model, tokenizer) of `model_name` when the caller has them already."""
    start = time.perf_counter()
    model, tokenizer = loaded or load_model(model_name, torch.float32, torch.device("cpu"))
    texts = [prompt_text(tokenizer, p, "", "chat") for p in prompts]
    answers = generate(model, tokenizer, texts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                       on_batch=on_batch)
    rows = [{"prompt": p, "response": a} for p, a in zip(prompts, answers) if not is_refusal(a)]
    counts = {"generated": len(prompts), "kept": len(rows), "dropped_as_refusals": len(prompts) - len(rows),
              "seconds": round(time.perf_counter() - start, 1)}
    return rows, counts
