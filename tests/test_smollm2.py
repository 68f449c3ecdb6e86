"""The sink patch on the real SmolLM2-135M-Instruct (30 layers, 9 query heads, 3 kv heads)."""

from __future__ import annotations

import pytest
import torch
from parity import assert_parity, eager_reference

from surgerycli.data.chat import render
from surgerycli.data.refsets import default_harmful, default_harmless
from surgerycli.sink import encode, measure_set

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("side", ["left", "right"])
def test_parity_with_eager_on_chat_text(smollm2, side):
    model, tok = smollm2
    texts = [render(tok, s) for s in default_harmful().samples[:2] + default_harmless().samples[:1]]
    tok.padding_side = side
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert (mask == 0).any()  # the batch is padded
    cols = assert_parity(model, ids, mask, reference_tol=1e-3)  # eager vs SDPA logits differ by fp32 rounding only
    assert len(cols) == 30 and cols[0].shape[1] == 9


def test_measure_set_matches_per_sample_eager(smollm2):
    """Batched, padded, length-sorted measurement equals one-sample-at-a-time eager statistics."""
    model, tok = smollm2
    ids = encode(tok, default_harmful().samples[:3], max_length=64)
    got = measure_set(model, ids, pad_id=tok.pad_token_id, batch_size=2, sink_position=0,
                      device=torch.device("cpu"))  # (N, L, H)
    for n, row in enumerate(ids):
        x = torch.tensor([row])
        with torch.no_grad():
            _, cols = eager_reference(model, x, torch.ones_like(x))
        ref = torch.stack([cols[l][0, :, 1:].mean(-1) for l in range(30)])  # (L, H) by hand: queries 1..n-1
        torch.testing.assert_close(got[n], ref, atol=1e-5, rtol=0)
