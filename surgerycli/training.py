"""`surgery finetune`: the Surgery regularizer and the Trainer subclass that adds it to the SFT loss.

    loss = sft_loss + alpha * mean over all heads of relu(d_h)

d_h comes from one batched forward of `k` harmful and `k` harmless reference samples through the sink
patch. That term is back-propagated after the SFT loss, in the same training step, so the activations
of the two forwards never coexist; gradients add up in the LoRA weights exactly as with one joint backward.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import Trainer

from surgerycli.patches import capture_sinks, sink_per_sample

from .finetune_data import pad_batch


def sink_divergence(stats: torch.Tensor, k: int) -> torch.Tensor:
    """(L, H) harmful minus harmless mean sink; stats: (2k, L, H), the first k rows harmful.

    Rows with no statistic (NaN: nothing after the sink) are left out of their set's mean.
    """
    def set_mean(x: torch.Tensor) -> torch.Tensor:
        valid = ~torch.isnan(x).any(dim=(1, 2))  # (k,)
        return x[valid].mean(dim=0)  # (L, H); NaN when no row is valid, caught by the caller

    return set_mean(stats[:k]) - set_mean(stats[k:])


def sink_loss(d: torch.Tensor) -> torch.Tensor:
    """mean over all heads of relu(d_h): only heads that sink more on harmful text are pushed."""
    return torch.relu(d).mean()


@dataclass
class SinkRegularizer:
    """Draws the per-step reference batch and computes alpha * sink_loss with its gradient."""

    alpha: float
    sink_position: int
    harmful: list[list[int]]  # token ids of the rendered reference samples
    harmless: list[list[int]]
    k: int  # samples drawn from each set per step
    pad_id: int
    seed: int

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """(2k, T) ids and mask: k harmful then k harmless rows, the same for a step after a resume."""
        rng = random.Random(self.seed * 1_000_003 + step)
        rows = [{"input_ids": r} for r in rng.sample(self.harmful, min(self.k, len(self.harmful)))]
        rows += [{"input_ids": r} for r in rng.sample(self.harmless, min(self.k, len(self.harmless)))]
        batch = pad_batch(rows, self.pad_id)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def backward_step(self, model: torch.nn.Module, step: int, scale: float, backward) -> tuple[float, int, int]:
        """Forward and backward of `scale * alpha * sink_loss`; (sink loss, positive heads, ref tokens).

        The capture stays open through the backward so that a non-reentrant gradient-checkpoint
        recompute of the forward takes the sink path again.
        """
        batch = {k: v.to(model.device) for k, v in self.batch(step).items()}
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under peft's wrapper
        with capture_sinks(model, batch["attention_mask"], self.sink_position) as state:
            # the decoder alone: the statistic needs no logits, which would cost (2k, T, vocab) memory
            base.get_decoder()(**batch, use_cache=False)
            stats = sink_per_sample(state.columns, batch["attention_mask"], state.sink_index)  # (2k, L, H)
            d = sink_divergence(stats, len(batch["input_ids"]) // 2)  # (L, H)
            loss = sink_loss(d)
            if torch.isnan(loss):
                raise ValueError("reference samples too short: no token after the sink position")
            backward(loss * (self.alpha * scale))
        return float(loss.detach()), int((d > 0).sum()), int(batch["attention_mask"].sum())


class SurgeryTrainer(Trainer):
    """A Trainer whose loss is SFT plus the Surgery sink term; without a regularizer it is plain SFT.

    `compute_loss` is the SFT loss and records it; `training_step` adds the sink term's backward.
    """

    def __init__(self, *args, regularizer: SinkRegularizer | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.regularizer = regularizer
        # per-batch mean SFT loss, divided by grad_accum by the Trainer: the sink term is scaled alike
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, list[float]] = {"sft_loss": [], "sink_loss": [], "positive_heads": []}
        self.tokens = {"train": 0, "reference": 0}
        self._micro = (-1, 0)  # (optimizer step, micro-batch within it): each draws its own reference batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        # SFT forward and backward first (the Trainer's own step), then the sink term's: the second
        # forward reuses the memory the first one freed, so the peak stays that of SFT
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.regularizer is None or self.regularizer.alpha == 0:
            return loss
        step, micro = self._micro
        self._micro = (self.state.global_step, micro + 1 if step == self.state.global_step else 0)
        draw = self._micro[0] * self.args.gradient_accumulation_steps + self._micro[1]
        scale = 1.0 / self.current_gradient_accumulation_steps
        with self.compute_loss_context_manager():
            sink, positive, ref_tokens = self.regularizer.backward_step(model, draw, scale, self.accelerator.backward)
        self._metrics["sink_loss"].append(sink)
        self._metrics["positive_heads"].append(positive)
        self.tokens["reference"] += ref_tokens
        return loss + self.regularizer.alpha * sink * scale  # the logged total; both parts already back-propagated

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs)
        if model.training:
            loss = out[0] if return_outputs else out
            self._metrics["sft_loss"].append(float(loss.detach()))
            self.tokens["train"] += int(inputs["attention_mask"].sum())
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the means of the extra terms since the last one
            for key, values in self._metrics.items():
                logs[key] = sum(values) / len(values) if values else None
                values.clear()
        super().log(logs, start_time)
