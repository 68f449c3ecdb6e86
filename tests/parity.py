"""The reference computations the sink patch and the Surgery loss are checked against: eager attention,
output_attentions=True, one forward per sample (the reference code's way)."""

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


def assert_parity(model, ids, mask, *, reference_tol: float, column_tol: float = 1e-5) -> dict:
    """The patched forward against plain attention (logits within 1e-5: the patch leaves the output as it was),
    against the eager reference (logits within `reference_tol`), and its sink columns against the reference's
    on every real query (within `column_tol`). The patched columns, layer -> (B, H, T)."""
    real = mask.bool()
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        ref_logits, ref_cols = eager_reference(model, ids, mask)
        logits, cols = patched(model, ids, mask)
    assert (logits - plain)[real].abs().max() < 1e-5
    assert (logits - ref_logits)[real].abs().max() < reference_tol
    assert sorted(cols) == sorted(ref_cols)
    for layer, col in cols.items():
        assert (col - ref_cols[layer]).abs()[real[:, None, :].expand_as(col)].max() < column_tol, layer
    return cols


def reference_sink_loss(model, harmful, harmless, sink_position=0):
    """The reference code's way: eager attention, output_attentions=True, one forward per set."""
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    means = []
    for rows in (harmful, harmless):
        per_sample = []
        for r in rows:  # one at a time: no padding to reason about
            out = model(input_ids=torch.tensor([r], device=model.device), output_attentions=True)
            # (L, H): mean over queries after the sink of A[i, p]
            per_sample.append(torch.stack([a[0, :, sink_position + 1 :, sink_position].mean(-1) for a in out.attentions]))
        means.append(torch.stack(per_sample).mean(0))
    model.set_attn_implementation(impl)
    d = means[0] - means[1]  # (L, H)
    return torch.relu(d).mean(), d
