"""`surgery eval --decode static`: continuous batching over fixed slots, with one compiled decode step.

The continuous path (continuous.py) changes its batch's shape whenever a row leaves or joins, so no step can be
captured once and replayed; on a GPU a step of a small model is then bound by Python and kernel launches. Here
the cache is static: SLOTS rows of C = longest prompt + new tokens columns per layer, allocated once. Every
decode step runs every slot at one shape (input (S, 1), positions (S,), keys and values (S, H_kv, C, D)), so on
CUDA `torch.compile(mode="reduce-overhead")` records it as one CUDA graph and replays it. Each row keeps its own
position, writes its new key and value at that column, and attends to its columns 0..pos. A finished row frees
its slot; waiting prompts are prefilled eagerly (left-padded together, as in continuous.py) and their keys and
values copied into free slots at columns 0..P-1. The price: each step attends over all C columns, masked.

Greedy answers equal one prompt at a time (tests/evaluate/test_generation.py). Models: those whose dynamic
cache is one plain full-attention layer per layer (`upstream.hf_cache.plain_cache`), in eager or SDPA attention.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

from ..upstream.hf_cache import kv_pairs, mark_static
from .continuous import Live, prefill
from .padding import kv_shape


class SlotCache:
    """Keys and values of S slots x C columns per layer; `update` writes each row's one new token at its own
    column (`pos`, set before each step) and returns the whole buffers, as transformers' StaticLayer does."""

    def __init__(self, model, slots: int, columns: int):
        layers, kv_heads, head_dim = kv_shape(model)
        device, dtype = next(model.parameters()).device, model.dtype
        shape = (slots, kv_heads, columns, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.columns = torch.arange(columns, device=device)  # (C,)
        for t in [*self.keys, *self.values, self.columns]:
            mark_static(t)  # in-place writes into fixed addresses: a CUDA graph can replay them
        self.pos = torch.zeros(slots, dtype=torch.long, device=device)  # (S,) the column this step writes

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        k, v = self.keys[layer_idx], self.values[layer_idx]  # (S, H, C, D)
        at = self.pos[:, None, None, None].expand(-1, k.shape[1], 1, k.shape[3])  # (S, H, 1, D)
        k.scatter_(2, at, key_states)
        v.scatter_(2, at, value_states)
        return k, v

    def put(self, slots: list[int], new: Live) -> None:
        """The prefilled rows of `new` (left-padded to one length P) into `slots`, at columns 0..P_row-1."""
        width = new.mask.shape[1]
        for (keys, values), k, v in zip(kv_pairs(new.cache), self.keys, self.values):
            for row, slot in enumerate(slots):
                n = int(new.pos[row])  # the row's prompt length: its real tokens are the last n columns
                k[slot, :, :n] = keys[row, :, width - n:]
                v[slot, :, :n] = values[row, :, width - n:]


def step(model, cache: SlotCache, last: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """One greedy token for every slot: each row's token `last` at position `pos` (both (S,))."""
    cache.pos = pos
    hidden = cache.columns[None, :] > pos[:, None]  # (S, C) columns after the row's own
    mask = torch.zeros(hidden.shape, dtype=model.dtype, device=pos.device).masked_fill(
        hidden, torch.finfo(model.dtype).min)[:, None, None, :]  # (S, 1, 1, C) additive: eager and SDPA alike
    out = model(input_ids=last[:, None], position_ids=pos[:, None], attention_mask=mask, past_key_values=cache,
                use_cache=True)
    return out.logits[:, -1].float().argmax(-1)  # (S,)


def compiled_step(device: torch.device) -> Callable:
    """The step as one CUDA graph on a GPU (torch.compile's reduce-overhead mode); as it is on CPU."""
    if device.type != "cuda":
        return step
    return torch.compile(step, mode="reduce-overhead")


def columns_for(encoded: list[list[int]], max_new_tokens: int) -> int:
    """Cache columns for these prompts: the longest one and its new tokens, rounded up to a multiple of 64 so
    that benchmarks of similar prompt lengths share one compiled graph."""
    return -(-(max(len(e) for e in encoded) + max_new_tokens) // 64) * 64


@torch.inference_mode()
def static_ids(model, encoded: list[list[int]], *, slots: int, max_new_tokens: int, eos: list[int], pad_id: int,
               on_done: Callable[[int], None] | None = None, run_step: Callable | None = None,
               columns: int | None = None) -> list[list[int]]:
    """Each prompt's greedy answer tokens (up to and with its end-of-turn token), `slots` rows at once.
    `run_step`: the decode step (default: `compiled_step` for the model's device); `columns`: the cache's
    length (default `columns_for`; at least that)."""
    device = next(model.parameters()).device
    slots = min(slots, len(encoded))
    cache = SlotCache(model, slots, max(columns or 0, columns_for(encoded, max_new_tokens)))
    run_step = run_step or compiled_step(device)
    waiting = deque(sorted(range(len(encoded)), key=lambda i: -len(encoded[i])))  # longest first: OOM shows early
    stop, out = set(eos), [[] for _ in encoded]
    owner: list[int | None] = [None] * slots  # the prompt in each slot
    answers: list[list[int]] = [[] for _ in range(slots)]
    last = torch.full((slots,), pad_id, dtype=torch.long, device=device)  # (S,) next input token
    pos = torch.zeros(slots, dtype=torch.long, device=device)  # (S,) its position; 0 in a free slot
    live = torch.zeros(slots, dtype=torch.long, device=device)  # (S,) 1 where a slot holds a prompt
    while waiting or any(o is not None for o in owner):
        free = [s for s, o in enumerate(owner) if o is None]
        if waiting and len(free) >= max(1, slots // 4):  # join in groups: one prefill for several
            group = [waiting.popleft() for _ in range(min(len(free), len(waiting)))]
            new = prefill(model, [encoded[i] for i in group], group, pad_id)
            taken = free[:len(group)]
            cache.put(taken, new)
            index = torch.tensor(taken, device=device)
            last[index], pos[index], live[index] = new.last, new.pos, 1
            for s, i, answer in zip(taken, group, new.answers):
                owner[s], answers[s] = i, answer
        else:
            tokens = run_step(model, cache, last, pos)
            last, pos = tokens.clone(), (pos + 1) * live  # a free slot stays at column 0
            for s, token in enumerate(tokens.tolist()):
                if owner[s] is not None:
                    answers[s].append(token)
        done = [s for s, o in enumerate(owner) if o is not None and (answers[s][-1] in stop
                                                                    or len(answers[s]) >= max_new_tokens)]
        for s in done:
            out[owner[s]], owner[s] = answers[s], None
        if done:
            ended = torch.tensor(done, device=device)
            pos[ended], live[ended] = 0, 0
            if on_done is not None:
                on_done(len(done))
    return out
