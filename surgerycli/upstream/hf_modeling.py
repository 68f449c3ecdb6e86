"""transformers' models and attention functions: the internals of the sink patch and of GGUF loading."""

from __future__ import annotations

import functools

from .internal import Internal


def _config():
    from transformers import PretrainedConfig

    return PretrainedConfig


def _sdpa():
    import transformers.integrations.sdpa_attention as sdpa

    return sdpa


def _quantizer():
    from transformers.quantizers.base import HfQuantizer

    return HfQuantizer


INTERNALS = (
    Internal("transformers", "transformers.PretrainedConfig._attn_implementation", "restore a model's own attention "
             "after sink mode", _config, "_attn_implementation", instance=True),
    Internal("transformers", "transformers.integrations.sdpa_attention.sdpa_attention_forward", "the sink attention "
             "is SDPA with one more value channel", _sdpa, "sdpa_attention_forward",
             ("module", "query", "key", "value", "attention_mask")),
    Internal("transformers", "transformers.integrations.sdpa_attention.repeat_kv", "grouped-query keys for the eager "
             "softcap path (Gemma 2)", _sdpa, "repeat_kv", ("hidden_states", "n_rep")),
    Internal("transformers", "transformers.quantizers.base.HfQuantizer.remove_quantization_config", "a GGUF model "
             "arrives dequantized but marked quantized, which the Trainer refuses to fine-tune", _quantizer,
             "remove_quantization_config", ("model",)),
)


def attn_implementation(config) -> str:
    """The attention implementation a model runs with now."""
    return config._attn_implementation


@functools.cache
def sdpa_functions():
    """(sdpa_attention_forward, repeat_kv): transformers' SDPA attention and its key/value repetition."""
    sdpa = _sdpa()
    return sdpa.sdpa_attention_forward, sdpa.repeat_kv


def drop_gguf_quantizer(model) -> None:
    """Remove the quantizer marker a dequantized GGUF model keeps (its layers are plain Linear)."""
    model.hf_quantizer.remove_quantization_config(model)
