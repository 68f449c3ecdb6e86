"""Per-architecture facts for the sink patch, as data (serves `surgery inspect` and `surgery finetune`).

Every supported decoder calls the registered attention function with the same signature, and sliding
windows, padding and Gemma 2's softcap reach it as arguments and masks; what differs between families is
where the capture state is attached: the class of the attention module, listed here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    attention_class: str  # class name of the attention module that calls the attention interface


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture("LlamaAttention"),
    "mistral": Architecture("MistralAttention"),
    "qwen2": Architecture("Qwen2Attention"),
    "qwen3": Architecture("Qwen3Attention"),
    "gemma": Architecture("GemmaAttention"),
    "gemma2": Architecture("Gemma2Attention"),
    "gemma3_text": Architecture("Gemma3Attention"),
}


class UnsupportedArchitecture(ValueError):
    pass


def architecture_for(model_type: str) -> Architecture:
    """The table entry for `model_type`, or an error that lists the supported ones."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitecture(
            f"unsupported model_type {model_type!r}: expected one of {supported}"
        ) from None
