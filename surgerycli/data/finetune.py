"""`surgery finetune`: the fine-tuning mix (benign task + poisoned pairs), tokenized for assistant-only loss.

An example is a chat (list of messages) ending with the assistant turn the model learns; the formats
are those of `data.chat.row_messages` (messages, gsm8k, alpaca, prompt_response, sst2, agnews, auto).
Harmful pairs are read the same way, as a harmful set under the `data.rows` `is_safe` policy.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..errors import InputError
from .chat import Messages, render, row_messages
from .rows import TABLE_SUFFIXES, Role, read_rows

IGNORE = -100  # label of tokens left out of the loss


def read_examples(path: str | Path, fmt: str = "auto", role: Role = None) -> list[Messages]:
    """Training chats from a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a hub dataset
    (`data.rows`); an InputError names the source, row and what was expected.

    `role` ("harmful" / "harmless") reads the file as such a set under the `data.rows` is_safe policy.
    """
    rows = read_rows(path, TABLE_SUFFIXES, role=role)
    examples = [row_messages(r, fmt) for r in rows]
    if not examples:
        raise InputError(f"{path}: no {role + ' ' if role else ''}examples in it")
    return examples


def build_mix(
    benign: list[Messages], harmful: list[Messages], poison_ratio: float, num_samples: int, seed: int
) -> tuple[list[Messages], int]:
    """(`num_samples` chats, shuffled with `seed`; how many are harmful) as the papers mix them."""
    n_harmful = round(poison_ratio * num_samples)
    n_benign = num_samples - n_harmful
    rng = random.Random(seed)
    for key, pool, n in (("data.benign", benign, n_benign), ("data.harmful", harmful, n_harmful)):
        if n > len(pool):
            raise InputError(
                f"data.num_samples: {num_samples} at poison_ratio {poison_ratio:g} needs {n} examples "
                f"from {key}, which has {len(pool)}"
            )
    mix = rng.sample(benign, n_benign) + rng.sample(harmful, n_harmful)
    rng.shuffle(mix)
    return mix, n_harmful


def tokenize_example(tokenizer, messages: Messages, max_length: int) -> dict[str, list[int]] | None:
    """input_ids and labels with every token before the last assistant turn masked (IGNORE).

    Cut on the right at `max_length`; None when no assistant token is left to learn.
    """
    prompt = render(tokenizer, messages[:-1])  # ends with the generation prompt
    full = render(tokenizer, messages)
    if not full.startswith(prompt):
        raise InputError("the chat template renders a conversation that does not start with its prompt")
    enc = tokenizer(full, add_special_tokens=False, truncation=True, max_length=max_length,
                    return_offsets_mapping=True)
    ids = enc["input_ids"]
    # a token belongs to the answer when it ends after the prompt text (offsets, not a second
    # tokenization, so a token spanning the boundary is never split)
    labels = [t if end > len(prompt) else IGNORE for t, (_, end) in zip(ids, enc["offset_mapping"])]
    if all(x == IGNORE for x in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def masked_parts(tokenizer, example: dict[str, list[int]]) -> tuple[str, str]:
    """(the text masked from the loss, the text the model learns) of a tokenized example: the first masked
    run of tokens and everything from the first learned token on (`--dry-run` shows both)."""
    ids, labels = example["input_ids"], example["labels"]
    first = next(i for i, x in enumerate(labels) if x != IGNORE)
    return tokenizer.decode(ids[:first]), tokenizer.decode(ids[first:])


def pad_batch(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) input_ids, attention_mask and labels (IGNORE on padding)."""
    T = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[b, :n] = torch.tensor(r["input_ids"])
        mask[b, :n] = 1
        labels[b, :n] = torch.tensor(r.get("labels", r["input_ids"]))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
