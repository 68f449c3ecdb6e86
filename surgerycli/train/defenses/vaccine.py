"""`[defense] method = "vaccine"`: Vaccine, perturbation-aware alignment (an alignment-stage defense).

Paper: Huang et al., "Vaccine: Perturbation-aware Alignment for Large Language Models against Harmful
Fine-tuning Attack", NeurIPS 2024; authors' code: github.com/git-disl/Vaccine (`VaccineTrainer`). Each
step makes two passes on the alignment batch. The first finds g_l, the gradient of the loss with respect
to the output of every attention module l (the hidden states each attention block adds to the residual
stream); the perturbation is e_l = rho * g_l / ||g||, with one norm over all layers together. The second
pass adds e_l to each attention output and takes the gradient of the loss there: the update that keeps
the alignment loss low under the worst small drift of the hidden states, which is what harmful
fine-tuning later causes. Default rho 2 (the authors' README runs `Vaccine.sh 2`). The first pass moves
no weight gradient: it differentiates with respect to the hidden states alone.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from surgerycli.patches import attention_modules

from ..sections import Section
from ..step import Step
from . import Defense, Metric, register_defense


class VaccineOptions(Section):
    rho: Annotated[float, Field(ge=0)] = 2.0  # the hidden states' perturbation radius
    # ([paper] the authors' README: Vaccine.sh 2)


def hidden_gradients(model, inputs: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(loss, gradient of the loss with respect to each attention module's output, in layer order)."""
    modules, outputs = attention_modules(model), {}

    def keep(module, args, output):
        outputs.setdefault(module, output[0])  # the first forward's; a checkpoint recompute adds none

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        loss = model(**inputs, use_cache=False).loss
    finally:
        for h in handles:
            h.remove()
    return loss, list(torch.autograd.grad(loss, [outputs[m] for m in modules]))


def perturbations(grads: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """e_l = rho * g_l / ||g|| with ||g|| over every layer's gradient together (+1e-7, as the authors)."""
    norm = torch.norm(torch.stack([g.float().norm() for g in grads]))
    return [(rho * g.float() / (norm + 1e-7)).to(g.dtype) for g in grads]


class perturbed:
    """Inside the block every attention module's output gets its e_l added (a forward hook)."""

    def __init__(self, model, deltas: list[torch.Tensor]):
        self.pairs = list(zip(attention_modules(model), deltas))

    def __enter__(self):
        def add(delta):
            return lambda module, args, output: (output[0] + delta, *output[1:])

        self.handles = [m.register_forward_hook(add(d)) for m, d in self.pairs]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@register_defense
class Vaccine(Defense):
    name = "vaccine"
    title = "Vaccine"
    stage = "align"
    options_class = VaccineOptions
    main_option = "rho"
    metrics = (Metric("hidden_grad_norm", "|g|", ".4f", "||g||: hidden-state gradient norm (first pass)"),)

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        return [("perturbation", "-", f"Vaccine rho {self.options.rho:g}: attention outputs, two passes a step")]

    def training_step(self, step: Step, model) -> torch.Tensor:
        with step.context():
            _, grads = hidden_gradients(model, step.prepare(step.inputs))
        step.record("hidden_grad_norm", float(torch.norm(torch.stack([g.float().norm() for g in grads]))))
        with perturbed(model, perturbations(grads, self.options.rho)):
            return step.sft()
