"""`[defense] post = "antidote"`: Antidote, post-fine-tuning safety alignment by one-shot pruning.

Paper: Huang et al., "Antidote: Post-fine-tuning Safety Alignment for Large Language Models against Harmful
Fine-tuning", ICML 2025; authors' code: github.com/git-disl/Antidote (`AntidoteTrainer.save_mask`,
`utils.prune_wanda_outlier`). After the user's fine-tuning, each weight gets its Wanda score over a
re-alignment set of harmful (prompt, answer) samples, |W_ij| x ||X_j||_2 with X_j the j-th input feature over
every token of the set; in each output row the top `dense_ratio` share of the weights by that score (the
weights that carry the harmful behaviour most) is set to zero. One shot: no training, no gradient. As in the
authors' code the weights scored are the fine-tuned adapter's LoRA matrices (lora_A and lora_B) on a LoRA
run, and the attention's query, key and value projections on a full fine-tuning run; each row prunes
`cols - floor(cols x (1 - dense_ratio))` weights (their sort). Defaults from their
script/finetune/antidote_poison_ratio.sh: dense_ratio 0.1, 2000 re-alignment samples; their re-alignment
data is BeaverTails' unsafe rows from index 5000 (disjoint from the attack's), ours by default the built-in
Do-Not-Answer prompts with templated affirmative openings (no HarmBench prompt).
"""

from __future__ import annotations

import math
import random
from typing import Annotated

import torch
from pydantic import Field

from ...data.pairs import HARMFUL_SET, describe, named_pairs
from ...sink import encode
from ..sections import PairsSource, Section
from . import Defense, RepairContext, register_defense

FULL_TARGETS = ("q_proj", "k_proj", "v_proj")  # what a full fine-tuning run's repair scores (the authors' choice)


class AntidoteOptions(Section):
    realignment_data: PairsSource = HARMFUL_SET  # harmful prompt/answer pairs the scores are computed on
    dense_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.1  # share of each row's weights pruned ([paper] 0.1)
    samples: Annotated[int, Field(ge=1)] = 2000  # re-alignment samples, at most ([paper] bad_sample_num=2000)


def target_modules(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linear modules Antidote scores: the LoRA matrices of a peft model, else q/k/v projections."""
    lora = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".lora_" in n}
    if lora:
        return lora
    return {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rpartition(".")[2] in FULL_TARGETS}


@torch.no_grad()
def input_norms(model: torch.nn.Module, modules: dict[str, torch.nn.Linear], rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Per module, ||X_j||_2 for each input feature j over every token of `rows` (one forward per sample, no
    padding: what the authors' calibration does with batch 1)."""
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in modules.items()}

    def add(name: str):
        def hook(module, args, output) -> None:  # returns nothing: the output stays the module's
            sums[name].add_(args[0].detach().reshape(-1, args[0].shape[-1]).double().pow(2).sum(0).cpu())
        return hook

    handles = [m.register_forward_hook(add(n)) for n, m in modules.items()]
    device = next(model.parameters()).device
    try:
        for ids in rows:
            model(input_ids=torch.tensor([ids], device=device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: s.sqrt() for n, s in sums.items()}


def wanda_scores(modules: dict[str, torch.nn.Linear], norms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """|W_ij| x ||X_j||_2 per weight, (out, in) per module."""
    return {n: m.weight.detach().abs().double().cpu() * norms[n][None, :] for n, m in modules.items()}


def prune_mask(score: torch.Tensor, dense_ratio: float) -> torch.Tensor:
    """1 on the weights to prune: in each row, all but the floor(cols x (1 - dense_ratio)) lowest scores."""
    keep = math.floor(score.shape[1] * (1 - dense_ratio))
    order = torch.sort(score, dim=-1, stable=True).indices  # ascending
    mask = torch.ones_like(score)
    return mask.scatter_(1, order[:, :keep], 0.0)


@register_defense
class Antidote(Defense):
    name = "antidote"
    title = "Antidote"
    stage = "post"
    options_class = AntidoteOptions
    main_option = "dense_ratio"

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        o = self.options
        return [("after training", f"{o.samples} samples", f"Antidote: prune {o.dense_ratio:g} of each row by "
                 f"Wanda score on {describe(o.realignment_data)}")]

    def repair(self, model: torch.nn.Module, ctx: RepairContext) -> dict:
        o = self.options
        pairs = named_pairs(o.realignment_data, "antidote.realignment_data", "harmful")
        pairs = random.Random(ctx.seed).sample(pairs, min(o.samples, len(pairs)))
        rows = [r for r in encode(ctx.tokenizer, pairs, ctx.max_length) if r]
        modules = target_modules(model)
        was_training = model.training
        model.eval()
        try:
            scores = wanda_scores(modules, input_norms(model, modules, rows))
        finally:
            model.train(was_training)
        pruned = 0
        with torch.no_grad():
            for n, m in modules.items():
                mask = prune_mask(scores[n], o.dense_ratio).to(m.weight.device)
                m.weight.mul_((1 - mask).to(m.weight.dtype))
                pruned += int(mask.sum())
        total = sum(m.weight.numel() for m in modules.values())
        return {"modules": len(modules), "pruned": pruned, "of": total, "samples": len(rows)}
