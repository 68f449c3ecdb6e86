"""Per-architecture facts for the sink patch, as data (serves `surgery inspect` and `surgery finetune`).

Every supported decoder calls the registered attention function with the same signature; what differs
between families is listed here and nowhere else: the attention module class (where the capture state
is attached), whether layers may use a sliding window, whether attention logits are softcapped (which
forces the eager path), and the projection names LoRA targets by default.
"""

from __future__ import annotations

from dataclasses import dataclass

_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    attention_class: str  # class name of the attention module that calls the attention interface
    sliding_window: bool  # some layers may attend within a window only
    softcap: bool  # logits softcapped: SDPA cannot run it, the eager path does
    lora_targets: tuple[str, ...] = _PROJ


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture("LlamaAttention", sliding_window=False, softcap=False),
    "mistral": Architecture("MistralAttention", sliding_window=True, softcap=False),
    "qwen2": Architecture("Qwen2Attention", sliding_window=True, softcap=False),
    "qwen3": Architecture("Qwen3Attention", sliding_window=True, softcap=False),
    "gemma": Architecture("GemmaAttention", sliding_window=False, softcap=False),
    "gemma2": Architecture("Gemma2Attention", sliding_window=True, softcap=True),
    "gemma3_text": Architecture("Gemma3Attention", sliding_window=True, softcap=False),
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
