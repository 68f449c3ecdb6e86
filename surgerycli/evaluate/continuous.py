"""`surgery eval`: greedy generation with continuous batching over a dynamic KV cache.

A fixed batch runs until its longest answer ends: under the paper's protocol (512 new tokens) a refusal ends
after ~20 tokens while a compliant answer runs to 512, and the finished rows keep computing. Here a finished
row leaves the cache at once, and waiting prompts join when a quarter of the slots is free: they are prefilled
together, left-padded to the live rows' cache length (or the live rows to theirs), and decode on in the same
batch. Each row keeps its own positions, so its answer is the one it would get alone (up to the float
rounding that any batching brings; the tests compare with one prompt at a time).

The model must keep one plain `DynamicLayer` per layer (Llama, Qwen2, SmolLM2, ...); a sliding-window or
linear-attention cache is not rearranged here, and `generation.generate_ids` falls back to fixed batches.
The cache's internals are reached through `upstream.hf_cache`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..upstream.hf_cache import kv_pairs, new_cache, set_kv_pairs
from .padding import left_pad


@dataclass
class Live:
    """The rows decoding together; every tensor is indexed by row."""
    index: list[int]  # each row's prompt (position in the caller's list)
    answers: list[list[int]]  # tokens generated so far, per row
    cache: object  # DynamicCache: keys/values (B, H_kv, L, D) per layer, left-padded to one length L
    mask: torch.Tensor  # (B, L) 1 where the cache holds a real token
    pos: torch.Tensor  # (B,) position of each row's next input token (its real tokens so far)
    last: torch.Tensor  # (B,) each row's last generated token: the next input

    def keep(self, rows: list[int]) -> None:
        """Only these rows stay; columns that are padding in every remaining row are cut from the left."""
        sel = torch.tensor(rows, device=self.mask.device)
        self.index = [self.index[r] for r in rows]
        self.answers = [self.answers[r] for r in rows]
        self.mask, self.pos, self.last = self.mask[sel], self.pos[sel], self.last[sel]
        first = int(self.mask.any(0).long().argmax())  # first column some row still attends to
        self.mask = self.mask[:, first:]
        set_kv_pairs(self.cache, [(k[sel, :, first:], v[sel, :, first:]) for k, v in kv_pairs(self.cache)])


def _pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def join(live: Live, new: Live) -> Live:
    """One batch of both: the shorter cache padded on the left to the longer one's length."""
    L, P = live.mask.shape[1], new.mask.shape[1]

    def cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B_a + B_b, H_kv, max(L, P), D)
        return torch.cat([_pad_left(a, max(P - L, 0), 2), _pad_left(b, max(L - P, 0), 2)])

    set_kv_pairs(live.cache, [(cat(ka, kb), cat(va, vb))
                              for (ka, va), (kb, vb) in zip(kv_pairs(live.cache), kv_pairs(new.cache))])
    mask = torch.cat([_pad_left(live.mask, max(P - L, 0), 1), _pad_left(new.mask, max(L - P, 0), 1)])
    return Live(live.index + new.index, live.answers + new.answers, live.cache, mask,
                torch.cat([live.pos, new.pos]), torch.cat([live.last, new.last]))


def prefill(model, prompts: list[list[int]], index: list[int], pad_id: int) -> Live:
    """Run the prompts (left-padded together) and take each one's first greedy token."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))  # (B, P)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate: each row counts from its first token
    cache = new_cache(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    first = out.logits[:, -1].float().argmax(-1)  # (B,)
    return Live(list(index), [[t] for t in first.tolist()], out.past_key_values, mask, mask.sum(-1), first)


def decode(model, live: Live) -> None:
    """One greedy token for every live row."""
    mask = torch.cat([live.mask, live.mask.new_ones(len(live.index), 1)], dim=1)  # (B, L + 1)
    out = model(input_ids=live.last[:, None], attention_mask=mask, position_ids=live.pos[:, None],
                past_key_values=live.cache, use_cache=True)
    live.last = out.logits[:, -1].float().argmax(-1)  # (B,)
    live.mask, live.pos = mask, live.pos + 1
    for answer, token in zip(live.answers, live.last.tolist()):
        answer.append(token)


@torch.inference_mode()
def continuous_ids(model, encoded: list[list[int]], *, slots: int, max_new_tokens: int, eos: list[int],
                   pad_id: int, on_done: Callable[[int], None] | None = None) -> list[list[int]]:
    """Each prompt's greedy answer tokens (up to and with its end-of-turn token), at most `slots` rows at once."""
    waiting = deque(sorted(range(len(encoded)), key=lambda i: -len(encoded[i])))  # longest first: OOM shows early
    stop, out = set(eos), [[] for _ in encoded]
    live: Live | None = None
    while waiting or live is not None:
        free = slots - (len(live.index) if live else 0)
        if waiting and (live is None or free >= max(1, slots // 4)):  # join in groups: one prefill for several
            group = [waiting.popleft() for _ in range(min(free, len(waiting)))]
            new = prefill(model, [encoded[i] for i in group], group, pad_id)
            live = new if live is None else join(live, new)
        else:
            decode(model, live)
        done = [r for r, a in enumerate(live.answers) if a[-1] in stop or len(a) >= max_new_tokens]
        for r in done:
            out[live.index[r]] = live.answers[r]
        if done and on_done is not None:
            on_done(len(done))
        if len(done) == len(live.index):
            live = None
        elif done:
            ended = set(done)
            live.keep([r for r in range(len(live.index)) if r not in ended])
    return out
