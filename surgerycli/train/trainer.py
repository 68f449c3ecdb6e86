"""`surgery finetune`: the Trainer that runs whichever defense the recipe names, on the same mixin as the
Python API (`train.hosting`).

Beyond the mixin it keeps the recipe's choices: the SFT loss as a per-batch mean (the extra terms are scaled
alike), the chunked or Liger loss (`train.loss`), the `sft_loss` metric and the token counts of
summary.json, and a defense context built from the recipe (its system prompt, sequence length and the
reference pools it has already read).
"""

from __future__ import annotations

from transformers import Trainer

from .defenses import DefenseContext
from ..upstream.hf_trainer import loss_per_batch
from .hosting import DefenseMixin
from .loss import causal_lm_loss


class DefenseTrainer(DefenseMixin, Trainer):
    """A Trainer whose micro-step is the defense's `training_step`; with `sft` it is a plain Trainer."""

    def __init__(self, *args, context: DefenseContext, loss: str = "plain", **kwargs):
        self._context = context  # read by the mixin's __init__ (defense.setup)
        super().__init__(*args, **kwargs)
        self.loss_kind = loss  # "plain" (the model's own), "chunked" or "liger" (train.loss)
        # per-batch mean SFT loss, divided by grad_accum by the Trainer: extra terms are scaled alike
        loss_per_batch(self)
        self.last_loss = 0.0  # the last micro-step's total loss (callbacks.FiniteGuard)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.last_loss = float(loss.detach())
        return loss

    def mix_into_dataset(self, defense, kwargs: dict) -> int:
        return self._context.mixed  # the recipe's mix holds the defense's examples already

    def defense_context(self, mixed: int = 0) -> DefenseContext:
        return self._context

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_kind != "plain" and not return_outputs:
            out = causal_lm_loss(model, inputs, use_liger=self.loss_kind == "liger")
        else:
            out = super().compute_loss(model, inputs, return_outputs=return_outputs)
        if model.training:
            loss = out[0] if return_outputs else out
            self.record("sft_loss", float(loss.detach()))
            self.token_counts["train"] += int(inputs["attention_mask"].sum())
        return out
