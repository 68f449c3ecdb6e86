"""The attention function behind `surgery inspect` and `surgery finetune`: exact sink columns from fused SDPA.

Column p of softmax(QK^T) is what attention returns when every value vector is one-hot on key p. So the
value tensor gets one extra channel, 1 at each sequence's sink key and 0 elsewhere, and the fused kernel
returns the normal output plus A[i, p] for every query i: exact, differentiable, O(T) extra memory. Query
and key get zero channels so all head dims stay equal (fused kernels want that; unequal dims fall back to a
~6x slower path on CPU); zero channels leave the scores unchanged. The pad is `PAD` channels, not one:
keeping the head dim's alignment keeps the kernel's summation order, so the normal output stays bit-equal
to plain SDPA (a 1-channel pad moved SmolLM2's logits by 4e-5). Sliding windows and padding come through the mask transformers builds, so a sink
outside a query's window reads 0. Softcapped logits (Gemma 2) take an eager path that reads the column
off the probability matrix.

`register()` adds it to transformers' AttentionInterface under `SINK_ATTENTION`, with `sdpa_mask` as its mask
builder (without a registered mask function transformers builds no causal mask at all); sink mode calls it on
first use, so importing the patch changes nothing in transformers. The SDPA internals it builds on are
reached through `surgerycli.upstream.hf_modeling`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import functools

import torch

from surgerycli.upstream.hf_modeling import sdpa_functions

SINK_ATTENTION = "surgery_sink"
STATE_ATTR = "surgery_sink_state"
PAD = 8  # extra head channels: the one-hot sink channel, then zeros


@dataclass
class SinkState:
    """Shared by every attention module of one model while it is in sink mode."""

    previous_implementation: str
    sink_index: torch.Tensor | None = None  # (B,) key position of each sequence's sink; None: not capturing
    columns: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, H, T) sink probabilities


def _eager_softcap(module, query, key, value, attention_mask, scaling, dropout, softcap):
    """Eager attention with logit softcapping; the mask is sdpa_mask's boolean form or None (plain causal)."""
    groups, repeat_kv = getattr(module, "num_key_value_groups", 1), sdpa_functions()[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)  # (B, H, S, D)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, S)
    scores = torch.tanh(scores / softcap) * softcap
    T, S = scores.shape[-2:]
    if attention_mask is None:  # no padding and no window in reach: causal, queries aligned to the last keys
        attention_mask = torch.ones(T, S, dtype=torch.bool, device=scores.device).tril(S - T)
    if attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (B, T, H, D)
    return out, probs


def sink_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, H, T, D)
    key: torch.Tensor,  # (B, KV, S, D)
    value: torch.Tensor,  # (B, KV, S, D)
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    state: SinkState | None = getattr(module, STATE_ATTR, None)
    capture = state is not None and state.sink_index is not None
    if scaling is None:  # fix the scale before the head dim changes
        scaling = query.shape[-1] ** -0.5
    head_dim = value.shape[-1]
    if capture:
        B, KV, S, _ = value.shape
        keys = torch.arange(S, device=value.device)
        onehot = (keys[None, :] == state.sink_index[:, None].to(value.device)).to(value.dtype)  # (B, S)
        extra = torch.nn.functional.pad(onehot[:, None, :, None], (0, PAD - 1))  # (B, 1, S, PAD)
        value = torch.cat([value, extra.expand(B, KV, S, PAD)], dim=-1)  # (B, KV, S, D+PAD)
        query = torch.nn.functional.pad(query, (0, PAD))  # (B, H, T, D+PAD), zero channels
        key = torch.nn.functional.pad(key, (0, PAD))  # (B, KV, S, D+PAD), zero channels
    if softcap is not None:
        out, weights = _eager_softcap(module, query, key, value, attention_mask, scaling, dropout, softcap)
    else:
        out, weights = sdpa_functions()[0](
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )  # out: (B, T, H, D or D+PAD)
    if capture:
        # a copy, not a view: a view would keep the layer's whole (B, T, H, D + PAD) output alive for as long
        # as the column is kept (inspect keeps every layer's: 1.39x plain SDPA's peak at 8192 tokens on an H200)
        state.columns[module.layer_idx] = out[..., head_dim].transpose(1, 2).contiguous()  # (B, H, T)
        out = out[..., :head_dim]
    return out, weights


@functools.cache
def register() -> None:
    """Make `SINK_ATTENTION` an attention implementation transformers knows (once per process)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SINK_ATTENTION, sink_attention_forward)
    AttentionMaskInterface.register(SINK_ATTENTION, sdpa_mask)
