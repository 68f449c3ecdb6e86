"""transformers' KV cache, and torch's compiler marker: the internals of `surgery eval`'s continuous batching.

The continuous path moves rows in and out of a `DynamicCache` (a finished answer leaves, waiting prompts join)
by rewriting each layer's key and value tensors; the static path hands the model a cache object of its own
whose `update` the attention layers call as they call the `Cache` API's. Both rest on the names below.
"""

from __future__ import annotations

import functools

import torch

from .internal import Internal

ROOM = 128  # spare positions a growing layer allocates: one copy per 128 steps instead of one per step


def _dynamic_layer():
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


def _cache():
    from transformers.cache_utils import Cache

    return Cache


def _dynamic_cache():
    from transformers import DynamicCache

    return DynamicCache


def _dynamo():
    return torch._dynamo


INTERNALS = (
    Internal("transformers", "transformers.cache_utils.DynamicLayer.update", "a growing layer writes each step into "
             "spare room instead of concatenating the whole cache", _dynamic_layer, "update",
             ("key_states", "value_states")),
    Internal("transformers", "transformers.cache_utils.DynamicLayer.lazy_initialization", "a growing layer sets up "
             "its first keys and values as transformers' own does", _dynamic_layer, "lazy_initialization",
             ("key_states", "value_states")),
    Internal("transformers", "transformers.cache_utils.DynamicLayer.get_seq_length", "the positions a growing layer "
             "holds", _dynamic_layer, "get_seq_length", ()),
    Internal("transformers", "transformers.cache_utils.DynamicLayer.is_initialized", "whether a layer holds keys yet",
             _dynamic_layer, "is_initialized", instance=True),
    Internal("transformers", "transformers.cache_utils.DynamicLayer.keys", "rows leave and join by rewriting each "
             "layer's keys (B, H_kv, L, D)", _dynamic_layer, "keys", instance=True),
    Internal("transformers", "transformers.cache_utils.DynamicLayer.values", "and its values", _dynamic_layer,
             "values", instance=True),
    Internal("transformers", "transformers.DynamicCache.layers", "a model's cache as one layer object per decoder "
             "layer (built from the config), replaced by growing layers", _dynamic_cache, "layers", instance=True),
    Internal("transformers", "transformers.cache_utils.Cache.update", "the static path's own cache is called by the "
             "attention layers as a Cache is", _cache, "update", ("key_states", "value_states", "layer_idx")),
    Internal("torch", "torch._dynamo.mark_static_address", "the static cache's buffers keep fixed addresses, so a "
             "CUDA graph replays its in-place writes", _dynamo, "mark_static_address", ("t",)),
)


@functools.cache
def growing_layer():
    """A DynamicLayer that writes each step into spare room: transformers' own concatenates the whole cache at
    every step, which on CPU costs as much memory traffic as the step's weights."""
    DynamicLayer = _dynamic_layer()

    class GrowingLayer(DynamicLayer):
        buffers: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, H_kv, capacity, D) each

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            L, t = self.get_seq_length(), key_states.shape[-2]
            k = self.buffers[0] if self.buffers is not None else None
            mine = k is not None and self.keys.data_ptr() == k.data_ptr() and self.keys.shape[0] == k.shape[0]
            if not mine or L + t > k.shape[-2]:  # rows were moved (join, keep) or the room is used up
                shape = (*key_states.shape[:2], L + t + ROOM, key_states.shape[-1])
                self.buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
                if L:
                    self.buffers[0][:, :, :L], self.buffers[1][:, :, :L] = self.keys, self.values
            self.buffers[0][:, :, L:L + t], self.buffers[1][:, :, L:L + t] = key_states, value_states
            self.keys, self.values = self.buffers[0][:, :, :L + t], self.buffers[1][:, :, :L + t]
            return self.keys, self.values

    return GrowingLayer


def new_cache(model):
    """A DynamicCache of growing layers for `model` (one per decoder layer)."""
    cache = _dynamic_cache()(config=model.config)
    layer = growing_layer()
    cache.layers = [layer() for _ in cache.layers]
    return cache


def plain_cache(model) -> bool:
    """Whether the model's dynamic cache is one full-attention DynamicLayer per layer (rows can be moved)."""
    try:
        cache = _dynamic_cache()(config=model.config)
    except Exception:  # noqa: BLE001 - an exotic config: keep the fixed-batch path
        return False
    return bool(cache.layers) and all(type(layer) is _dynamic_layer() for layer in cache.layers)


def kv_pairs(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values), (B, H_kv, L, D) each."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def set_kv_pairs(cache, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Replace each layer's keys and values (rows moved, columns cut or padded)."""
    for layer, (keys, values) in zip(cache.layers, pairs):
        layer.keys, layer.values = keys, values


def mark_static(t: torch.Tensor) -> None:
    """`t`'s address stays fixed: a compiled CUDA graph may replay in-place writes into it."""
    torch._dynamo.mark_static_address(t)
