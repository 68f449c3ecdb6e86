"""Attention patches behind `surgery inspect` and `surgery finetune`: exact per-head sink statistics.

Installed as `surgerycli.patches`; always import it by that name. Sink mode registers the sink attention with
transformers' AttentionInterface and AttentionMaskInterface on first use (`register`); importing changes nothing.
"""

from .architectures import ARCHITECTURES, Architecture, UnsupportedArchitecture, architecture_for
from .attention import SINK_ATTENTION, SinkState, register, sink_attention_forward
from .capture import (
    attention_modules,
    capture_sinks,
    measure_sinks,
    model_type,
    set_sink_mode,
    sink_index,
    sink_mode,
    sink_per_sample,
)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "SINK_ATTENTION",
    "SinkState",
    "UnsupportedArchitecture",
    "architecture_for",
    "attention_modules",
    "capture_sinks",
    "measure_sinks",
    "model_type",
    "register",
    "set_sink_mode",
    "sink_attention_forward",
    "sink_index",
    "sink_mode",
    "sink_per_sample",
]
