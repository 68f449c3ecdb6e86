"""`[defense] method = "surgery"`: the Surgery sink-divergence regularizer (the method this tool is named for).

    loss = sft_loss + alpha * mean over all heads of relu(d_h)

Paper: "Surgery: Mitigating Harmful Fine-Tuning for Large Language Models via Attention Sink" (2026);
authors' code: github.com/Lslland/Surgery. Defaults from there: alpha 300, sink position 0, one harmful
and one harmless reference sample per step, references = BeaverTails 30k_train unsafe / safe rows. The
reference sets, the sink position and the reference length are the `[measure]` settings, which every
method's sink_before/after.json use too.

d_h comes from one batched forward of `k` harmful and `k` harmless reference samples through the sink
patch. That term is back-propagated after the SFT loss, in the same training step, so the activations
of the two forwards never coexist; gradients add up in the trainable weights exactly as with one joint
backward. Only layers with a positive head take part in that backward (relu gives the others no
gradient), so it starts at the highest such layer. With alpha 0 no reference forward runs: bit-identical
to SFT. The sink attention is switched on around the reference forward and backward only: the host's SFT
pass keeps its own attention implementation (flash attention, packing, whatever it had).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field

from surgerycli.patches import UnsupportedArchitecture, attention_modules, capture_sinks, sink_mode, sink_per_sample

from ...data.finetune import pad_batch
from ...data.refsets import reference_pools
from ...errors import InputError
from ...sink import encode
from ..distributed import is_sharded
from ..sections import MeasureSection, Section
from ..step import Step
from . import Defense, DefenseContext, Metric, register_defense


class SurgeryOptions(Section):
    alpha: Annotated[float, Field(ge=0)] = 300.0  # the sink regularizer's weight ([paper] alpha=300)
    reference_batch_size: Annotated[int, Field(ge=1)] = 1  # reference samples per step, each set ([paper] 1)


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
        mask, k = batch["attention_mask"], len(batch["input_ids"]) // 2
        with sink_mode(model), capture_sinks(model, mask, self.sink_position) as state:
            # through the root module (FSDP2 gathers the root's own weights in its forward only), with the
            # logits of the last position alone: the statistic needs none, and (2k, T, vocab) costs memory
            out = model(**batch, use_cache=False, logits_to_keep=1)
            if len(state.columns) != len(attention_modules(model)):
                raise InputError(f"Surgery: {len(state.columns)} of {len(attention_modules(model))} attention layers "
                                 f"went through the sink attention (a kernel patch replaced the attention?); "
                                 f"refusing to train without the sink term")
            with torch.no_grad():
                d = sink_divergence(sink_per_sample(state.columns, mask, state.sink_index), k)  # (L, H)
            # every reference row has a token after the sink (setup keeps no other): a NaN here comes from
            # non-finite weights, and callbacks.FiniteGuard stops the run before the optimizer steps
            loss = sink_loss(d)
            # relu passes no gradient from a head with d_h <= 0: back-propagate from the layers that have a
            # positive head only, so the backward pass starts at the highest of them instead of carrying
            # zeros down from the last layer (the same gradient; none at all when no head is positive)
            active = {layer: state.columns[layer] for layer, row in zip(sorted(state.columns), d) if (row > 0).any()}
            term = None
            if active:
                d_active = sink_divergence(sink_per_sample(active, mask, state.sink_index), k)  # (A, H)
                term = torch.relu(d_active).sum() / d.numel() * (self.alpha * scale)
            if is_sharded(model):
                # FSDP2 gathers a layer's weights for backward in a hook on the layer's output, which the
                # attention weights bypass: a zero through the logits runs every hook (and every rank's
                # collectives, positive heads or not)
                term = out.logits.sum() * 0.0 + (term if term is not None else 0.0)
            if term is not None:
                backward(term)
        return float(loss), int((d > 0).sum()), int(mask.sum())


def reference_length(measure: MeasureSection, max_length: int) -> int:
    """Tokens per reference sample: measure.max_length, else the training sequences' `max_length`."""
    return measure.max_length or max_length


@register_defense
class Surgery(Defense):
    name = "surgery"
    title = "Surgery"
    options_class = SurgeryOptions
    main_option = "alpha"
    metrics = (Metric("sink_loss", "sink", ".5f", "sink loss  mean relu(d_h)"),
               Metric("positive_heads", "+heads", ".1f", "heads with d_h > 0 (reference batch)"))
    measures = True
    regularizer: SinkRegularizer | None = None  # set by setup (None with alpha 0: plain SFT)

    def label(self) -> str:
        return f"Surgery a={self.options.alpha:g}"

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        o, m = self.options, self.measure
        if not o.alpha:
            return [("reference / step", "-", "off (alpha 0: the SFT baseline)")]
        k = o.reference_batch_size
        return [("reference / step", f"{k} + {k}",
                 f"Surgery alpha {o.alpha:g}: {m.harmful_reference} + {m.harmless_reference}")]

    def setup(self, ctx: DefenseContext) -> None:
        if not self.options.alpha:
            return
        try:
            attention_modules(ctx.model)
        except UnsupportedArchitecture as e:
            raise InputError(f"Surgery: the sink statistic cannot be captured on this model ({e})") from None
        m = self.measure
        harm, safe = ctx.references or reference_pools(m.harmful_reference, m.harmless_reference, m.reference_rows,
                                                       ctx.seed)
        ids = {}
        for key, refset in (("measure.harmful_reference", harm), ("measure.harmless_reference", safe)):
            rows = [r for r in encode(ctx.tokenizer, refset.samples, reference_length(m, ctx.max_length))
                    if len(r) > m.sink_position + 1]
            if not rows:
                raise InputError(f"{key}: no sample has a token after the sink (measure.sink_position {m.sink_position})")
            ids[key] = rows
        self.regularizer = SinkRegularizer(
            alpha=self.options.alpha, sink_position=m.sink_position, harmful=ids["measure.harmful_reference"],
            harmless=ids["measure.harmless_reference"], k=self.options.reference_batch_size,
            pad_id=ctx.pad_id, seed=ctx.seed)

    def training_step(self, step: Step, model) -> torch.Tensor:
        # SFT forward and backward first (the host's own step), then the sink term's: the second
        # forward reuses the memory the first one freed, so the peak stays that of SFT
        loss = step.sft()
        if self.regularizer is None:
            return loss
        scale = 1.0 / step.accumulation
        with step.context():  # each micro-batch draws its own reference batch, the same after a resume
            sink, positive, ref_tokens = self.regularizer.backward_step(model, step.micro_step, scale, step.backward)
        step.record("sink_loss", sink)
        step.record("positive_heads", positive)
        step.count_tokens("reference", ref_tokens)
        return loss + self.regularizer.alpha * sink * scale  # the logged total; both parts already back-propagated
