"""`surgery finetune` with `train.fused_cross_entropy`: the SFT loss without a (B, T, vocab) logits tensor.

The plain loss (transformers' ForCausalLMLoss) runs the LM head over every position and keeps the fp32
logits of all of them for the backward pass: B * T * vocab * 4 bytes (1 GiB at B 2, T 1024, vocab 128k),
usually the largest tensor of a step. Here the decoder's last hidden states are taken instead, only the
positions that are learned (label != -100 after the shift; the masked prompt is most of a chat) go through
the head, and they go through it in chunks:

  chunked  any device: each chunk's logits are made, turned into the loss and into the gradients of
           the hidden states (and of the head's weights, where they are trained), and dropped, all in the
           forward pass, so one chunk of fp32 logits is alive at a time (with softcapping, its slope too;
           logsumexp makes a short-lived copy) and the backward pass
           only scales the stored gradients (Liger's scheme, in PyTorch: two head matmuls per chunk, not
           the three that recomputing the logits in the backward pass costs)
  liger    CUDA with `liger-kernel` installed: Liger's fused linear cross-entropy (one kernel, no logits)

Both give the plain loss (mean over learned tokens, logits upcast to fp32) and its gradient within fp32
tolerance (tests/train/test_loss.py; on CUDA, Liger's too: tests/gpu). Final-logit soft-capping (Gemma 2)
is applied as the model's forward does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import is_sharded

IGNORE = -100
CHUNK_TOKENS = 1024  # rows of logits per chunk: 1024 x 128k vocab x 4 bytes = 0.5 GiB


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of F.linear(hidden, weight, bias) against targets, chunk by chunk; the
    gradients are computed in the forward pass (see the module docstring)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, softcap, chunk):  # hidden (N, D), weight (V, D), targets (N,)
        grads = [torch.empty_like(hidden) if ctx.needs_input_grad[0] else None,
                 torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None,
                 torch.zeros_like(bias, dtype=torch.float32) if bias is not None and ctx.needs_input_grad[2] else None]
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start:start + chunk], targets[start:start + chunk]
            logits = F.linear(h, weight, bias).float()  # (n, V)
            slope = None
            if softcap:  # c * tanh(z / c), whose derivative is 1 - tanh(z / c)^2
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
                slope = capped.square_().neg_().add_(1)
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if not any(g is not None for g in grads):
                continue
            # d(sum of losses)/d(logits) = softmax minus the one-hot target, made in the logits' own memory
            g = logits.sub_(lse[:, None]).exp_()
            g[torch.arange(len(y), device=y.device), y] -= 1
            if slope is not None:
                g *= slope
            g = g.to(hidden.dtype)  # as the plain loss's gradient reaches the head's output
            if grads[0] is not None:
                grads[0][start:start + chunk] = g @ weight  # (n, D)
            if grads[1] is not None:
                grads[1] += (g.t() @ h).float()  # (V, D)
            if grads[2] is not None:
                grads[2] += g.float().sum(dim=0)
        ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in grads))
        ctx.present = [g is not None for g in grads]
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        gh, gw, gb = (g if present else None for g, present in zip(ctx.saved_tensors, ctx.present))
        scale = lambda g, dtype: None if g is None else (g * grad_total).to(dtype)  # noqa: E731
        return scale(gh, gh.dtype if gh is not None else None), scale(gw, ctx.dtypes[0]), scale(gb, ctx.dtypes[1]), \
            None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor,
                          softcap: float | None = None, chunk: int = CHUNK_TOKENS) -> torch.Tensor:
    """Mean next-token cross-entropy over learned positions. hidden: (B, T, D) final hidden states;
    labels: (B, T) with IGNORE on masked tokens (unshifted, as the model takes them)."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # (B*(T-1), D): position t predicts token t+1
    y = labels[:, 1:].reshape(-1).to(h.device)  # (B*(T-1),)
    keep = y != IGNORE
    h, y = h[keep], y[keep]  # (N, D), (N,): only learned positions reach the head
    total = _ChunkedLinearCrossEntropy.apply(h, head.weight, head.bias, y, softcap, chunk)
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
    if not is_sharded(model):
        hidden = decoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    else:  # FSDP2 gathers the root's weights (the head's among them) in the root's forward: run it, logits of
        # the last position only, keep the decoder's output; the head stays gathered until the backward
        kept = []
        hook = decoder.register_forward_hook(lambda module, args, out: kept.append(out.last_hidden_state))
        try:
            model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_to_keep=1,
                  use_cache=False)
        finally:
            hook.remove()
        hidden = kept[0]  # (B, T, D)
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    fn = liger_cross_entropy if use_liger else chunked_cross_entropy
    return fn(hidden, head, inputs["labels"], softcap)
