"""Attention patches behind `surgery inspect` and `surgery finetune`: exact per-head sink statistics.

Installed as `surgerycli.patches`; always import it by that name. Importing registers the sink attention
with transformers' AttentionInterface and AttentionMaskInterface.
"""

from .architectures import ARCHITECTURES, Architecture, UnsupportedArchitecture, architecture_for
from .attention import SINK_ATTENTION, SinkState, sink_attention_forward
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
    "set_sink_mode",
    "sink_attention_forward",
    "sink_index",
    "sink_mode",
    "sink_per_sample",
]
