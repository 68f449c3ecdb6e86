"""`[defense] method = "booster"`: Booster, harmful-perturbation attenuation (an alignment-stage defense).

Paper: Huang et al., "Booster: Tackling Harmful Fine-tuning for Large Language Models via Attenuating
Harmful Perturbation", ICLR 2025; authors' code: github.com/git-disl/Booster (`BoosterAlignmentTrainer`).
The alignment loss f gets a regularizer lambda * (h(w) - h(w - alpha * grad h(w) / ||grad h(w)||)), with
h the loss on harmful (prompt, harmful answer) pairs: how much one normalized harmful step would lower
the harmful loss. Minimizing it makes the aligned model a poor starting point for a harmful fine-tune.
As in the authors' code the step direction is a constant (no gradient through it), so the update is

    grad f(w) + lambda * (grad h(w) - grad h(w'))        w' = w - alpha * grad h(w) / (||grad h(w)|| + 1e-7)

with one harmful batch per step. Defaults from the authors' script/alignment/smooth_align.sh: lambda 5,
alpha 0.1; their harmful data is BeaverTails' unsafe rows, ours by default the built-in Do-Not-Answer
prompts with templated affirmative openings.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from ...data.pairs import HARMFUL_SET, describe, named_pairs
from ..distributed import global_norm, is_sharded
from ..sections import PairsSource, Section
from ..step import Step
from . import Defense, DefenseContext, Metric, draw_batch, register_defense


class BoosterOptions(Section):
    harmful_data: PairsSource = HARMFUL_SET  # harmful prompt/response pairs whose loss the perturbation simulates
    lamb: Annotated[float, Field(ge=0)] = 5.0  # lambda, the harmful-loss reduction term's weight ([paper] lamb=5)
    alpha: Annotated[float, Field(ge=0)] = 0.1  # the simulated harmful step's size ([paper] alpha=0.1)


def gradients(loss: torch.Tensor, params: dict[str, torch.nn.Parameter], backward=None) -> dict[str, torch.Tensor]:
    """{name: d loss / d weight}, each .grad left as it was. With `backward` (under FSDP2, whose sharded
    weights are not in the graph: it gathers them in hooks and reduce-scatters into .grad) through it."""
    if backward is None:
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    kept = {n: p.grad for n, p in params.items()}
    for p in params.values():
        p.grad = None
    backward(loss)
    out = {n: p.grad for n, p in params.items()}
    for n, p in params.items():
        p.grad = kept[n]
    return out


def booster_grads(model, harmful: dict, alpha: float, backward=None) -> tuple[dict[str, torch.Tensor], float, float]:
    """({name: grad h(w) - grad h(w')}, h(w), h(w')) over the trainable weights; the weights end unchanged.
    `backward`: see `gradients`."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    h = model(**harmful, use_cache=False).loss
    g = gradients(h, params, backward)
    if backward is None:
        norm = torch.norm(torch.stack([x.float().norm() for x in g.values()])) + 1e-7
    else:  # FSDP2: the gradients are shards
        norm = global_norm(list(g.values())) + 1e-7
    original = {n: p.detach().clone() for n, p in params.items()}  # restored exactly, not by adding back
    with torch.no_grad():
        for n, p in params.items():
            p.sub_((alpha * g[n].float() / norm).to(p.dtype))
    try:
        h_after = model(**harmful, use_cache=False).loss
        g_after = gradients(h_after, params, backward)
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(original[n])
    return {n: g[n] - g_after[n] for n in params}, float(h.detach()), float(h_after.detach())


@register_defense
class Booster(Defense):
    name = "booster"
    title = "Booster"
    stage = "align"
    options_class = BoosterOptions
    main_option = "lamb"
    metrics = (Metric("harmful_loss", "h", ".4f", "harmful loss h(w)"),
               Metric("harmful_drop", "h-h'", ".5f", "h(w) - h(w'): one harmful step's drop"))

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        o = self.options
        return [("harmful / step", str(recipe.train.batch_size),
                 f"Booster lambda {o.lamb:g}, alpha {o.alpha:g}: {describe(o.harmful_data)}")]

    def setup(self, ctx: DefenseContext) -> None:
        self.rows = ctx.encode(named_pairs(self.options.harmful_data, "booster.harmful_data", "harmful"))
        self.pad_id, self.seed = ctx.pad_id, ctx.seed

    def training_step(self, step: Step, model) -> torch.Tensor:
        harmful = step.prepare(draw_batch(self.rows, step.batch_size, step.micro_step, self.seed, self.pad_id))
        with step.context():
            diff, h, h_after = booster_grads(model, harmful, self.options.alpha,
                                             step.backward if is_sharded(model) else None)
        loss = step.sft()  # grad f, scaled for accumulation
        scale = self.options.lamb / step.accumulation
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in diff:
                    p.grad = p.grad + (scale * diff[name]).to(p.grad.dtype)
        step.record("harmful_loss", h)
        step.record("harmful_drop", h - h_after)
        return loss
