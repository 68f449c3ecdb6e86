"""`surgery eval`: the shapes every generation path shares: left-padded prompt rows and the KV cache's size."""

from __future__ import annotations

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


def kv_shape(model) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of the model's KV cache."""
    c = model.config.get_text_config()
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return c.num_hidden_layers, getattr(c, "num_key_value_heads", None) or c.num_attention_heads, head_dim


def kv_bytes_per_token(model) -> int:
    """Bytes one token's keys and values take in every layer: 2 * layers * kv heads * head dim * element size."""
    layers, kv_heads, head_dim = kv_shape(model)
    return 2 * layers * kv_heads * head_dim * model.dtype.itemsize

