"""`surgery data demo --written-tokens N`: harmful answers the packaged, unaligned SmolLM2 wrote itself.

The templated attack pairs teach an opening with no content; a real attack (BeaverTails' unsafe rows in the
papers) teaches answers. The packaged SmolLM2-135M-Instruct complies with almost every harmful request
before the demo aligns it, so its own greedy answers to the attack's Do-Not-Answer prompts stand in for
BeaverTails' harmful responses, made offline. Answers the keyword judge counts as refusals (or empty) are
dropped: the set holds compliance only. Greedy decoding makes the set the same on every run of the same
model and settings, and a rerun whose settings match the manifest's reuses the file instead of generating.
This module holds the file's name and settings; `evaluate.written.write_answers` generates the answers, and
the caller hands it to `data.demo.build_demo_data` as its `writer`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

WRITTEN_FILE = "harmful_written.jsonl"
# writer(prompts, max_new_tokens) -> (rows {prompt, response} the model complied with, counts for the manifest)
Writer = Callable[[list[str], int], tuple[list[dict[str, str]], dict]]


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
