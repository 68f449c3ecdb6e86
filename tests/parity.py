"""The reference computation the sink patch is checked against: eager attention, output_attentions=True."""

from __future__ import annotations

import torch

from surgerycli.patches import capture_sinks, set_sink_mode, sink_index


def eager_reference(model, ids, mask, sink_position=0):
    """Logits and per-layer sink columns (B, H, T) the reference way: eager, output_attentions=True."""
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    model.set_attn_implementation(impl)
    idx = sink_index(mask, sink_position)
    rows = torch.arange(ids.shape[0])
    return out.logits, {l: a[rows, :, :, idx] for l, a in enumerate(out.attentions)}  # (B, H, T)


def patched(model, ids, mask, sink_position=0):
    set_sink_mode(model, True)
    try:
        with capture_sinks(model, mask, sink_position) as state:
            logits = model(input_ids=ids, attention_mask=mask).logits
            return logits, dict(state.columns)
    finally:
        set_sink_mode(model, False)
