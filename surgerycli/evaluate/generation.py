"""`surgery eval`: greedy generation for many prompts at once, batched with left padding.

Prompts are sorted by token length so each batch pads little, generated, and returned in input order.
Shared by the evaluated model and the generative judges.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) input_ids and attention_mask, padded on the left so every row ends at the last column."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[b, T - len(r):] = 1
    return ids, mask


def eos_ids(model, tokenizer) -> list[int]:
    """Every token that ends a turn: the generation config's (a list for Llama 3) and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def encode(tokenizer, texts: list[str], add_special_tokens: bool = False,
           max_input_tokens: int | None = None) -> list[list[int]]:
    """Token ids of each text; cut to its first `max_input_tokens` tokens when given (as the papers'
    evaluation cuts inputs: the tokenizer's right-side truncation)."""
    cut = {"truncation": True, "max_length": max_input_tokens} if max_input_tokens else {}
    return [tokenizer(t, add_special_tokens=add_special_tokens, **cut)["input_ids"] for t in texts]


@torch.inference_mode()
def generate(
    model, tokenizer, texts: list[str], *, batch_size: int, max_new_tokens: int,
    add_special_tokens: bool = False, max_input_tokens: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuation of each already-rendered text (special tokens dropped, whitespace stripped).

    `add_special_tokens=False` for chat-template text, which carries its own BOS where the model uses one.
    """
    encoded = encode(tokenizer, texts, add_special_tokens, max_input_tokens)
    return generate_ids(model, tokenizer, encoded, batch_size=batch_size, max_new_tokens=max_new_tokens,
                        on_batch=on_batch)


@torch.inference_mode()
def generate_ids(
    model, tokenizer, encoded: list[list[int]], *, batch_size: int, max_new_tokens: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuation of each prompt given as token ids (what `generate` runs after encoding)."""
    from transformers import GenerationConfig

    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # longest first: OOM shows early
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids(model, tokenizer),
    )
    device = next(model.parameters()).device
    out: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = left_pad([encoded[i] for i in chunk], tokenizer.pad_token_id)  # (B, T)
        seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        new = seqs[:, ids.shape[1]:]  # (B, <= max_new_tokens)
        for i, row in zip(chunk, new):
            out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
        if on_batch is not None:
            on_batch(len(chunk))
    return out
