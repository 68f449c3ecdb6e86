"""`surgery finetune` with `train.fused_cross_entropy`: the SFT loss without a (B, T, vocab) logits tensor.

The plain loss (transformers' ForCausalLMLoss) runs the LM head over every position and keeps the fp32
logits of all of them for the backward pass: B * T * vocab * 4 bytes (1 GiB at B 2, T 1024, vocab 128k),
usually the largest tensor of a step. Here the decoder's last hidden states are taken instead, only the
positions that are learned (label != -100 after the shift; the masked prompt is most of a chat) go through
the head, and they go through it in chunks:

  chunked  any device: each chunk's logits are recomputed in the backward pass (activation
           checkpointing), so at most one chunk of fp32 logits is alive at a time
  liger    CUDA with `liger-kernel` installed: Liger's fused linear cross-entropy (one kernel, no logits)

Both give the plain loss (mean over learned tokens, logits upcast to fp32) and its gradient within fp32
tolerance (tests/train/test_loss.py). Final-logit soft-capping (Gemma 2) is applied as the model's forward does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100
CHUNK_TOKENS = 1024  # rows of logits per chunk: 1024 x 128k vocab x 4 bytes = 0.5 GiB at most


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                    softcap: float | None) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()  # (n, V)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor,
                          softcap: float | None = None, chunk: int = CHUNK_TOKENS) -> torch.Tensor:
    """Mean next-token cross-entropy over learned positions. hidden: (B, T, D) final hidden states;
    labels: (B, T) with IGNORE on masked tokens (unshifted, as the model takes them)."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # (B*(T-1), D): position t predicts token t+1
    y = labels[:, 1:].reshape(-1).to(h.device)  # (B*(T-1),)
    keep = y != IGNORE
    h, y = h[keep], y[keep]  # (N, D), (N,): only learned positions reach the head
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk):
        part = (h[start:start + chunk], head.weight, head.bias, y[start:start + chunk], softcap)
        total = total + (checkpoint(_chunk_loss_sum, *part, use_reentrant=False) if torch.is_grad_enabled()
                         else _chunk_loss_sum(*part))
    return total / max(int(keep.sum()), 1)


def liger_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor,
                        softcap: float | None = None) -> torch.Tensor:
    """The same loss through Liger's fused linear cross-entropy kernel (CUDA)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1).to(h.device)
    loss_fn = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, softcap=softcap)
    return loss_fn(head.weight, h, y, head.bias)


def liger_available(device: torch.device) -> bool:
    import importlib.util

    return device.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None


def causal_lm_loss(model, inputs: dict, use_liger: bool) -> torch.Tensor:
    """The SFT loss of a causal LM (a peft model or not) from its decoder's hidden states."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    hidden = decoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state  # (B, T, D)
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    fn = liger_cross_entropy if use_liger else chunked_cross_entropy
    return fn(hidden, head, inputs["labels"], softcap)
