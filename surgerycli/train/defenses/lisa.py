"""`[defense] method = "lisa"`: Lisa, lazy safety alignment by bi-state optimization.

Paper: Huang et al., "Lazy Safety Alignment for Large Language Models against Harmful Fine-tuning",
NeurIPS 2024; authors' code: github.com/git-disl/Lisa (`LisaTrainer`; also git-disl/Booster's
`ADMMTrainer`). The run alternates between two states: `alignment_steps` steps on alignment data
(harmful prompts with safe answers) and `finetune_steps` steps on the user's data. In each state the
loss gets a proximal term rho/2 * ||w - w_other||^2 toward the trainable weights as they were at the end
of the other state, so neither state drifts far from the other's solution. As in the authors' code the
run starts in the alignment state, and the proximal term is off for the first 10% of the run's steps
(their "warm-up": it hurts early convergence). Defaults from the authors' scripts
(script/finetune/lisa_poison_ratio.sh): rho 1, 100 alignment and 900 fine-tuning steps; their alignment
data is BeaverTails' safe rows; ours by default the built-in Do-Not-Answer refusals.

States switch on optimizer steps (the authors count micro-steps, with one micro-step per step). A batch
of alignment data replaces the user's batch in the alignment state and is drawn seeded by step; the
anchors travel in every checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from ...data.pairs import REFUSALS_SET, describe, named_pairs
from ..distributed import local_shard
from ..sections import PairsSource, Section
from ..step import Step
from . import Defense, DefenseContext, Metric, draw_batch, register_defense


class LisaOptions(Section):
    alignment_data: PairsSource = REFUSALS_SET  # the safety pairs of the alignment states
    alignment_steps: Annotated[int, Field(ge=1)] = 100  # steps on the alignment data per cycle ([paper] align_step=100)
    finetune_steps: Annotated[int, Field(ge=1)] = 900  # steps on the user data per cycle ([paper] finetune_step=900)
    rho: Annotated[float, Field(ge=0)] = 1.0  # the proximal term's weight, toward the other state ([paper] RHO=1)
    warmup: Annotated[float, Field(ge=0, le=1)] = 0.1  # share of the steps without the proximal term ([paper] 10%)


def state_at(step: int, alignment_steps: int, finetune_steps: int) -> str:
    """`alignment` or `finetune` for the optimizer step `step` (0-based), starting with alignment."""
    return "alignment" if step % (alignment_steps + finetune_steps) < alignment_steps else "finetune"


def proximal_grad_(params: dict[str, torch.nn.Parameter], anchor: dict[str, torch.Tensor], rho: float,
                   scale: float) -> float:
    """Add scale * grad of rho/2 * ||w - anchor||^2, i.e. scale * rho * (w - anchor), to each .grad; the term."""
    term = 0.0
    with torch.no_grad():
        for name, p in params.items():
            diff = p.detach() - like(anchor[name], p)
            term += 0.5 * rho * float(diff.float().pow(2).sum())
            g = scale * rho * diff
            p.grad = g.to(p.dtype) if p.grad is None else p.grad + g.to(p.grad.dtype)
    return term


def like(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """`t` on `p`'s device; under FSDP2, a checkpoint's local shard made a DTensor shaped as `p` again."""
    from torch.distributed.tensor import DTensor

    if isinstance(p, DTensor) and not isinstance(t, DTensor):
        return DTensor.from_local(t.to(p.device), p.device_mesh, p.placements, run_check=False,
                                  shape=p.shape, stride=p.stride())
    return t.to(p.device)


@register_defense
class Lisa(Defense):
    name = "lisa"
    title = "Lisa"
    options_class = LisaOptions
    main_option = "rho"
    metrics = (Metric("lisa_alignment", "align", ".2f", "share of steps in the alignment state", (-0.05, 1.05)),
               Metric("proximal", "prox", ".4f", "proximal term rho/2 ||w - w_other||^2"))

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.rows: list[dict] = []
        self.anchors: dict[str, dict[str, torch.Tensor]] = {}  # state -> the other state's last weights
        self.last_state: str | None = None

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        o = self.options
        return [("alignment / cycle", f"{o.alignment_steps} + {o.finetune_steps} steps",
                 f"Lisa rho {o.rho:g}: {describe(o.alignment_data)}, then the user's data")]

    def setup(self, ctx: DefenseContext) -> None:
        self.rows = ctx.encode(named_pairs(self.options.alignment_data, "lisa.alignment_data", "harmless"))
        self.pad_id, self.seed = ctx.pad_id, ctx.seed

    def _params(self, model) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def training_step(self, step: Step, model) -> torch.Tensor:
        o = self.options
        state = state_at(step.global_step, o.alignment_steps, o.finetune_steps)
        params = self._params(model)
        if self.last_state is None:  # as the authors' init: both anchors start at the initial weights
            self.anchors = {k: {n: p.detach().clone() for n, p in params.items()} for k in ("alignment", "finetune")}
        elif state != self.last_state:  # a switch: the state we leave hands its weights to the other as anchor
            self.anchors[state] = {n: p.detach().clone() for n, p in params.items()}
        self.last_state = state
        if state == "alignment":
            loss = step.sft(draw_batch(self.rows, step.batch_size, step.micro_step, self.seed, self.pad_id))
        else:
            loss = step.sft()
        term = 0.0
        if o.rho > 0 and step.global_step >= o.warmup * step.max_steps:
            term = proximal_grad_(params, self.anchors[state], o.rho, 1.0 / step.accumulation)
        step.record("lisa_alignment", float(state == "alignment"))
        step.record("proximal", term)
        return loss

    def state_dict(self) -> dict:
        # under FSDP2 each rank saves its own shards (train.hosting writes one file per rank)
        anchors = {k: {n: local_shard(t) for n, t in v.items()} for k, v in self.anchors.items()}
        return {"anchors": anchors, "last_state": self.last_state}

    def load_state_dict(self, state: dict) -> None:
        self.anchors, self.last_state = state["anchors"], state["last_state"]
