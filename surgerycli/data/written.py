"""`surgery data demo --written-tokens N`: harmful answers the packaged, unaligned SmolLM2 wrote itself.

The templated attack pairs teach an opening with no content; a real attack (BeaverTails' unsafe rows in the
papers) teaches answers. The packaged SmolLM2-135M-Instruct complies with almost every harmful request
before the demo aligns it, so its own greedy answers to the attack's Do-Not-Answer prompts stand in for
BeaverTails' harmful responses, made offline. Answers the keyword judge counts as refusals (or empty) are
dropped: the set holds compliance only. Greedy decoding makes the set the same on every run of the same
model and settings, and a rerun whose settings match the manifest's reuses the file instead of generating.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

WRITTEN_FILE = "harmful_written.jsonl"


def settings(prompts: list[str], model: str, max_new_tokens: int) -> dict:
    """What decides the written set: a rerun with equal settings reuses it."""
    digest = hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()[:16]
    return {"model": model, "decoding": "greedy", "max_new_tokens": max_new_tokens, "prompt_format": "chat",
            "system_prompt": "", "prompts": len(prompts), "prompts_sha256": digest}


def reusable(out: Path, previous: dict | None, wanted: dict) -> dict | None:
    """The previous manifest entry when it was made with `wanted` settings and its file is still there."""
    if not previous or not (out / WRITTEN_FILE).is_file():
        return None
    return previous if previous.get("settings") == wanted else None


def write_answers(
    prompts: list[str], model_name: str, *, max_new_tokens: int, batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None, loaded: tuple | None = None,
) -> tuple[list[dict[str, str]], dict]:
    """(rows {prompt, response} the model complied with, counts and time for the manifest). `loaded`: the
    (model, tokenizer) of `model_name` when the caller has them already."""
    import torch

    from ..evaluate.generation import generate
    from ..evaluate.judges import is_refusal
    from ..evaluate.prompts import prompt_text
    from ..models import load_model

    start = time.perf_counter()
    model, tokenizer = loaded or load_model(model_name, torch.float32, torch.device("cpu"))
    texts = [prompt_text(tokenizer, p, "", "chat") for p in prompts]
    answers = generate(model, tokenizer, texts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                       on_batch=on_batch)
    rows = [{"prompt": p, "response": a} for p, a in zip(prompts, answers) if not is_refusal(a)]
    counts = {"generated": len(prompts), "kept": len(rows), "dropped_as_refusals": len(prompts) - len(rows),
              "seconds": round(time.perf_counter() - start, 1)}
    return rows, counts
