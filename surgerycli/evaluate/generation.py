"""`surgery eval`: greedy generation for many prompts at once, with left padding.

`--decode`: continuous batching (`continuous.py`) where the model's cache allows it, fixed batches
(`model.generate`) otherwise; or continuous batching over static slots with a compiled decode step
(`static.py`). Prompts go longest first and come back in input order. `--batch-size auto` (the default) is
the number of rows the free memory holds. Shared by the evaluated model and the generative judges.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError
from ..upstream.hf_cache import ROOM, plain_cache
from .continuous import continuous_ids
from .padding import kv_bytes_per_token, left_pad
from .static import static_ids


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


MAX_SLOTS = 256  # vLLM's default max_num_seqs: beyond it a step's latency grows faster than its rows
FIXED_AUTO = 32  # batch of the paths that do not size themselves (classifier judges, lm-eval tasks) under auto


def free_bytes(device: torch.device) -> int:
    """Memory a batch may still take: the GPU's free memory, or the machine's available RAM on CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def auto_slots(model, prompt_tokens: int, max_new_tokens: int) -> int:
    """Rows generating at once that half the free memory holds (the other half: cache copies when rows join,
    allocator slack), each with a full KV cache and its share of a prefill's activations; 1 to MAX_SLOTS."""
    c = model.config.get_text_config()
    width = 4 * c.hidden_size + 2 * getattr(c, "intermediate_size", 4 * c.hidden_size)  # live prefill activations
    per_row = (kv_bytes_per_token(model) * (prompt_tokens + max_new_tokens + ROOM)
               + prompt_tokens * width * model.dtype.itemsize + c.vocab_size * 4)  # + one row of fp32 logits
    free = free_bytes(next(model.parameters()).device)
    return max(1, min(MAX_SLOTS, free // 2 // per_row))


def batch_rows(batch_size: int | str, model, encoded: list[list[int]], max_new_tokens: int) -> int:
    """`--batch-size` as a number of rows: itself, or for `auto` what `auto_slots` finds for these prompts."""
    if batch_size != "auto":
        return int(batch_size)
    return auto_slots(model, max((len(e) for e in encoded), default=1), max_new_tokens)


def fixed_batch(batch_size: int | str) -> int:
    """The batch of a path that does not size itself: the number given, or FIXED_AUTO under auto."""
    return FIXED_AUTO if batch_size == "auto" else int(batch_size)


@torch.inference_mode()
def generate(
    model, tokenizer, texts: list[str], *, batch_size: int | str, max_new_tokens: int,
    add_special_tokens: bool = False, max_input_tokens: int | None = None,
    on_batch: Callable[[int], None] | None = None, decode: str = "auto",
) -> list[str]:
    """Greedy continuation of each already-rendered text (special tokens dropped, whitespace stripped).

    `add_special_tokens=False` for chat-template text, which carries its own BOS where the model uses one.
    """
    encoded = encode(tokenizer, texts, add_special_tokens, max_input_tokens)
    return generate_ids(model, tokenizer, encoded, batch_size=batch_size, max_new_tokens=max_new_tokens,
                        on_batch=on_batch, decode=decode)


@torch.inference_mode()
def generate_ids(
    model, tokenizer, encoded: list[list[int]], *, batch_size: int | str, max_new_tokens: int,
    on_batch: Callable[[int], None] | None = None, decode: str = "auto",
) -> list[str]:
    """Greedy continuation of each prompt given as token ids (what `generate` runs after encoding), by the
    `decode` path (`--decode`: auto, continuous, static or fixed; auto: continuous where the cache allows it)."""
    rows = batch_rows(batch_size, model, encoded, max_new_tokens)
    plain = plain_cache(model)
    if decode in ("continuous", "static") and not plain:
        raise InputError(f"decode {decode}: {type(model).__name__}'s cache is not one plain full-attention layer "
                         "per layer (sliding window, linear attention); decode with fixed or auto")
    if decode == "fixed" or (decode == "auto" and not plain):
        return fixed_batches(model, tokenizer, encoded, rows, max_new_tokens, on_batch)
    run = static_ids if decode == "static" else continuous_ids
    answers = run(model, encoded, slots=rows, max_new_tokens=max_new_tokens, eos=eos_ids(model, tokenizer),
                  pad_id=tokenizer.pad_token_id, on_done=on_batch)
    return [tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers]


def fixed_batches(model, tokenizer, encoded: list[list[int]], batch_size: int, max_new_tokens: int,
                  on_batch: Callable[[int], None] | None) -> list[str]:
    """`model.generate` on batches of `batch_size` prompts; each batch runs until its longest answer ends."""
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
