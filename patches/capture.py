"""Sink mode and sink capture for a loaded model (serves `surgery inspect` and `surgery finetune`).

`set_sink_mode(model, True)` switches every attention layer to the registered sink attention and
`set_sink_mode(model, False)` restores the previous implementation; in sink mode with no capture open
the outputs are those of plain SDPA. `with sink_mode(model):` does both around a block (training switches
it on around the reference pass only, so the SFT pass keeps the model's own implementation).
`capture_sinks` opens a capture for one batch; `sink_per_sample` reduces the recorded columns to the
statistic (docs/inspect.md: the mean sink probability over the real queries after the sink).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from surgerycli.upstream.hf_modeling import attn_implementation

from .architectures import architecture_for
from .attention import SINK_ATTENTION, STATE_ATTR, SinkState, register


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper, or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def model_type(model: torch.nn.Module) -> str:
    return _base_model(model).config.get_text_config().model_type


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The attention modules of a supported model, in layer order; an error for an unsupported one."""
    arch = architecture_for(model_type(model))
    # fully_shard renames the class of each module it wraps FSDP<Name>
    found = [m for m in model.modules() if type(m).__name__.removeprefix("FSDP") == arch.attention_class]
    return sorted(found, key=lambda m: m.layer_idx)


def set_sink_mode(model: torch.nn.Module, enabled: bool) -> None:
    """Switch `model` in or out of sink mode; a no-op if it is already in the asked mode."""
    modules = attention_modules(model)
    base = _base_model(model)
    state = getattr(modules[0], STATE_ATTR, None) if modules else None
    if enabled and state is None:
        register()
        state = SinkState(previous_implementation=attn_implementation(base.config))
        base.set_attn_implementation(SINK_ATTENTION)
        for m in modules:
            setattr(m, STATE_ATTR, state)
    elif not enabled and state is not None:
        base.set_attn_implementation(state.previous_implementation)
        for m in modules:
            delattr(m, STATE_ATTR)


@contextmanager
def sink_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in sink mode inside the block, in the mode it had outside (a block inside another keeps it on)."""
    was_on = getattr(attention_modules(model)[0], STATE_ATTR, None) is not None
    set_sink_mode(model, True)
    try:
        yield
    finally:
        if not was_on:
            set_sink_mode(model, False)


def sink_index(attention_mask: torch.Tensor, sink_position: int = 0) -> torch.Tensor:
    """(B,) key position of the sink: `sink_position` tokens after each sequence's first real token."""
    first_real = attention_mask.to(torch.int64).argmax(dim=-1)  # (B,) left padding moves it right
    return first_real + sink_position


@contextmanager
def capture_sinks(
    model: torch.nn.Module, attention_mask: torch.Tensor, sink_position: int = 0
) -> Iterator[SinkState]:
    """Record sink columns for the forward passes run inside (read them inside: they are dropped on exit);
    the model must be in sink mode.

    With non-reentrant gradient checkpointing keep the capture open through the backward pass, so the
    recomputed forward takes the same path.
    """
    modules = attention_modules(model)
    state = getattr(modules[0], STATE_ATTR, None)
    if state is None:
        raise RuntimeError("capture_sinks needs the model in sink mode: call set_sink_mode(model, True)")
    state.columns = {}
    state.sink_index = sink_index(attention_mask, sink_position)
    try:
        yield state
    finally:
        state.sink_index = None
        # in training each column carries its layer's graph, which holds the attention output and SDPA's
        # saved tensors: kept past the capture, 30 such graphs would live through the next step's SFT pass
        state.columns = {}


def sink_per_sample(
    columns: dict[int, torch.Tensor], attention_mask: torch.Tensor, sink_idx: torch.Tensor
) -> torch.Tensor:
    """(B, L, H) mean sink probability over each sequence's real queries after its sink, in fp32.

    columns: layer -> (B, H, T); attention_mask: (B, T), 1 on real tokens; sink_idx: (B,).
    A sequence with no real query after its sink yields NaN (it has no statistic).
    """
    cols = torch.stack([columns[i] for i in sorted(columns)], dim=1).float()  # (B, L, H, T)
    T = cols.shape[-1]
    positions = torch.arange(T, device=cols.device)
    queries = attention_mask.bool().to(cols.device) & (positions[None, :] > sink_idx[:, None].to(cols.device))
    queries = queries[:, None, None, :]  # (B, 1, 1, T)
    # where, not multiply: padded query rows may hold NaN, and NaN * 0 would poison sums and gradients
    total = torch.where(queries, cols, torch.zeros((), device=cols.device)).sum(dim=-1)  # (B, L, H)
    count = queries.sum(dim=-1).to(total.dtype)  # (B, 1, 1)
    return total / count


def measure_sinks(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sink_position: int = 0,
) -> torch.Tensor:
    """(B, L, H) sink statistic of one batch, by one forward in sink mode (the caller sets grad mode)."""
    with capture_sinks(model, attention_mask, sink_position) as state:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return sink_per_sample(state.columns, attention_mask, state.sink_index)
