"""`train.fused_cross_entropy`: the chunked SFT loss equals the model's own loss and gradient."""

from __future__ import annotations

import pytest
import torch

from surgerycli.train import loss as loss_mod
from surgerycli.train.loss import causal_lm_loss, chunked_cross_entropy
from tiny import padded_batch, tiny_model


def batch(vocab: int):
    ids, mask = padded_batch([9, 14, 6], "right", vocab=vocab, seed=3)
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :4] = -100  # a masked prompt, as in a chat example
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "qwen2"])
def test_chunked_loss_and_gradient_equal_the_plain_ones(model_type, monkeypatch):
    model = tiny_model(model_type, attn_implementation="eager", dtype=torch.float32).train()
    inputs = batch(model.config.vocab_size)
    plain = model(**inputs).loss
    plain.backward()
    expect = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    monkeypatch.setattr(loss_mod, "CHUNK_TOKENS", 5)  # several chunks, the last one short
    chunked = causal_lm_loss(model, inputs, use_liger=False)
    chunked.backward()
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-6)
    for name, grad in expect.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-6, msg=name)


def test_softcapping_is_applied():
    """Gemma 2's final-logit soft-capping changes the loss; the chunked loss follows it."""
    model = tiny_model("gemma2", attn_implementation="eager", dtype=torch.float32, final_logit_softcapping=0.5)
    inputs = batch(model.config.vocab_size)
    with torch.no_grad():
        plain = model(**inputs).loss
        hidden = model.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        uncapped = chunked_cross_entropy(hidden, model.get_output_embeddings(), inputs["labels"], None)
        capped = causal_lm_loss(model, inputs, use_liger=False)
    torch.testing.assert_close(capped, plain, rtol=0, atol=1e-6)
    assert abs(float(uncapped - plain)) > 1e-3


def test_with_a_lora_model_and_a_hand_computed_mean():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama", dtype=torch.float32), LoraConfig(r=2, target_modules="all-linear")).train()
    inputs = batch(model.config.vocab_size)
    with torch.no_grad():
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.float()
        y = inputs["labels"][:, 1:]
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        keep = y != -100
        by_hand = -logp[keep].gather(1, y[keep][:, None]).mean()  # mean over learned tokens
        torch.testing.assert_close(causal_lm_loss(model, inputs, use_liger=False), by_hand, rtol=0, atol=1e-6)
