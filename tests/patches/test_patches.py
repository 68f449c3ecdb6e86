"""Parity of the sink patch with eager attention on tiny random models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from parity import assert_parity, eager_reference, patched
from tiny import TINY_CONFIGS, WINDOW, padded_batch, tiny_model

from surgerycli.patches import (
    ARCHITECTURES,
    SINK_ATTENTION,
    UnsupportedArchitecture,
    capture_sinks,
    set_sink_mode,
    sink_index,
    sink_per_sample,
)

LENGTHS = [12, 9, 5]


def test_every_required_architecture_is_in_the_table():
    assert set(TINY_CONFIGS) == set(ARCHITECTURES)
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_fp32_parity_with_eager(arch, side):
    model = tiny_model(arch)
    ids, mask = padded_batch(LENGTHS, side)
    real = mask.bool()
    cols = assert_parity(model, ids, mask, reference_tol=1e-5)
    for col in cols.values():
        assert col.shape == (len(LENGTHS), model.config.num_attention_heads, ids.shape[1])
    # The statistic is not trivially small: some head puts real weight on the sink.
    assert max(c[real[:, None, :].expand_as(c)].max() for c in cols.values()) > 0.1


@pytest.mark.parametrize("arch", ["mistral", "gemma2", "gemma3_text"])
def test_sliding_window_hides_the_sink(arch):
    """On a sliding layer, queries WINDOW or more tokens after the sink give exactly 0."""
    model = tiny_model(arch)
    ids, mask = padded_batch([12], "right")
    with torch.no_grad():
        _, cols = patched(model, ids, mask)
    sliding = 0  # layer 0 slides in every config with a window
    assert torch.all(cols[sliding][0, :, WINDOW:] == 0)
    assert torch.all(cols[sliding][0, :, 1:WINDOW] > 0)


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_sink_position_offset(arch):
    model = tiny_model(arch)
    ids, mask = padded_batch(LENGTHS, "left")
    with torch.no_grad():
        _, ref_cols = eager_reference(model, ids, mask, sink_position=2)
        _, cols = patched(model, ids, mask, sink_position=2)
    real = mask.bool()[:, None, :]
    for layer, col in cols.items():
        assert (col - ref_cols[layer]).abs()[real.expand_as(col)].max() < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gemma2", "qwen2"])
def test_gradients_match_eager(arch):
    """Gradients through the recorded sink statistic equal those through eager attention weights."""
    ids, mask = padded_batch(LENGTHS, "left")
    idx = sink_index(mask)
    weights = torch.randn(2, 4)  # (L, H) a fixed linear read-out of the statistic

    def grads(columns, model):
        stat = sink_per_sample(columns, mask, idx)  # (B, L, H)
        (stat * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_model, model = tiny_model(arch), tiny_model(arch)
    ref = grads(eager_reference(ref_model, ids, mask)[1], ref_model)
    got = grads(patched(model, ids, mask)[1], model)
    assert any(n.endswith("q_proj.weight") for n in got)
    params = dict(model.named_parameters())
    for name in ref.keys() | got.keys():  # a parameter the statistic does not reach: None or zeros
        zero = torch.zeros_like(params[name])
        torch.testing.assert_close(got.get(name, zero), ref.get(name, zero), atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_bf16_no_worse_than_eager_bf16(arch):
    """In bf16 the patch is as close to the fp32 truth as the reference way run in bf16."""
    ids, mask = padded_batch(LENGTHS, "right")
    real = mask.bool()[:, None, :]
    with torch.no_grad():
        _, truth = eager_reference(tiny_model(arch), ids, mask)
        _, eager16 = eager_reference(tiny_model(arch).to(torch.bfloat16), ids, mask)
        _, cols = patched(tiny_model(arch).to(torch.bfloat16), ids, mask)
    for layer, col in cols.items():
        assert col.dtype == torch.bfloat16
        err = (col.float() - truth[layer]).abs()[real.expand_as(col)].max()
        ref_err = (eager16[layer].float() - truth[layer]).abs()[real.expand_as(col)].max()
        assert err <= 1.25 * ref_err + 4e-3  # 4e-3: one bf16 ulp near 0.5


def test_mode_switch_is_one_call_and_leaves_outputs_unchanged():
    model = tiny_model("mistral")
    ids, mask = padded_batch(LENGTHS, "left")
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        set_sink_mode(model, True)
        assert model.config._attn_implementation == SINK_ATTENTION
        in_mode = model(input_ids=ids, attention_mask=mask).logits
        set_sink_mode(model, False)
        assert model.config._attn_implementation == "sdpa"
        after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, in_mode) and torch.equal(before, after)


def test_adapter_wrapped_model_parity():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("qwen3"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # non-zero B so the adapter changes attention
            torch.nn.init.normal_(p, std=0.5)
    ids, mask = padded_batch(LENGTHS, "right")
    assert_parity(model, ids, mask, reference_tol=1e-5)


def test_capture_needs_sink_mode():
    model = tiny_model("llama")
    _, mask = padded_batch(LENGTHS, "right")
    with pytest.raises(RuntimeError, match="set_sink_mode"):
        with capture_sinks(model, mask):
            pass


def test_columns_own_their_memory():
    """A column must be a copy: a view of the layer's (B, T, H, D + PAD) attention output would keep that
    whole output alive for as long as inspect keeps the column (every layer's, to the end of the pass)."""
    model = tiny_model("llama", attn_implementation="sdpa")
    ids, mask = padded_batch(LENGTHS, "right")
    set_sink_mode(model, True)
    with torch.no_grad(), capture_sinks(model, mask) as state:
        model(input_ids=ids, attention_mask=mask)
        cols = list(state.columns.values())
    assert len(cols) == model.config.num_hidden_layers
    for col in cols:  # (B, H, T): its storage holds B * H * T values, not B * T * H * (D + PAD)
        assert col.shape == (len(LENGTHS), model.config.num_attention_heads, max(LENGTHS))
        assert col.untyped_storage().nbytes() == col.numel() * col.element_size()


def test_capture_releases_the_columns_and_their_graphs_on_exit():
    """In training each column carries its layer's graph (the attention output, SDPA's saved tensors): a
    capture that kept the columns after its exit would hold every layer's through the next training step."""
    import weakref

    model = tiny_model("llama").train()
    ids, mask = padded_batch(LENGTHS, "right")
    set_sink_mode(model, True)
    with capture_sinks(model, mask) as state:
        logits = model(input_ids=ids, attention_mask=mask).logits
        refs = [weakref.ref(col) for col in state.columns.values()]
        assert len(refs) == model.config.num_hidden_layers and all(r() is not None and r().requires_grad for r in refs)
    assert state.columns == {} and all(r() is None for r in refs)
    assert logits.requires_grad  # the model's own graph is untouched


def test_unsupported_architecture_lists_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedArchitecture, match="'gpt2'.*gemma2.*llama.*qwen3"):
        set_sink_mode(model, True)


def test_sink_per_sample_by_hand():
    """Two sequences, one layer, one head: the mean over real queries after the sink, by hand."""
    cols = {0: torch.tensor([[[0.9, 0.5, 0.3, 0.7]], [[float("nan"), 1.0, 0.6, 0.2]]])}  # (B=2, H=1, T=4)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])  # right-padded; left-padded with a NaN pad row
    idx = sink_index(mask)
    assert idx.tolist() == [0, 1]
    stat = sink_per_sample(cols, mask, idx)  # (B, L, H)
    torch.testing.assert_close(stat[:, 0, 0], torch.tensor([(0.5 + 0.3) / 2, (0.6 + 0.2) / 2]))
    stat2 = sink_per_sample(cols, mask, sink_index(mask, 1))  # sink one token later: fewer queries
    torch.testing.assert_close(stat2[:, 0, 0], torch.tensor([0.3, 0.2]))
