"""Tiny random models, one per supported architecture, built in-process from configs (no hub)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

WINDOW = 4  # sliding window short enough that later queries lose sight of the sink

_COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention: 2 query heads per kv head
    head_dim=8,
    max_position_embeddings=128,
    initializer_range=0.3,  # peaky attention, so sink columns are far from uniform
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)

# Per-architecture config differences, as data.
TINY_CONFIGS: dict[str, dict] = {
    "llama": {},
    "mistral": {"sliding_window": WINDOW},
    "qwen2": {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    "qwen3": {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    "gemma": {"hidden_act": "gelu_pytorch_tanh"},
    "gemma2": {
        "sliding_window": WINDOW,
        "attn_logit_softcapping": 1.5,  # small cap: tanh is far from linear at these scores
        "final_logit_softcapping": 30.0,
        "query_pre_attn_scalar": 8,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "gemma3_text": {
        "sliding_window": WINDOW,
        "query_pre_attn_scalar": 8,
        "layer_types": ["sliding_attention", "full_attention"],
    },
}


def tiny_model(
    model_type: str, attn_implementation: str | None = None, seed: int = 0, **overrides
) -> torch.nn.Module:
    """Random model of `model_type`; attention defaults to the family's own choice (eager for Gemma 2)."""
    config = AutoConfig.for_model(model_type, **{**_COMMON, **TINY_CONFIGS[model_type], **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.eval()


def padded_batch(lengths: list[int], side: str, vocab: int = 96, seed: int = 0):
    """Random ids (3.., no special tokens) padded with 0 on `side`; returns (input_ids, attention_mask)."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        row = torch.randint(3, vocab, (n,), generator=g)
        span = slice(0, n) if side == "right" else slice(T - n, T)
        ids[b, span], mask[b, span] = row, 1
    return ids, mask
