"""`surgery finetune` with `[defense] post`: the post-fine-tuning defense applied to the trained model, after the
model as trained is saved beside it (adapter-trained/ or model-trained/), so both can be evaluated."""

from __future__ import annotations

from pathlib import Path

from .defenses import RepairContext, registry
from .recipe import Recipe
from .saving import save_trained


def build_post(recipe: Recipe):
    """The recipe's post-fine-tuning defense with its options, or None."""
    name = recipe.defense.post
    return None if name is None else registry()[name](**recipe.methods[name].model_dump())


def repair_trained(recipe: Recipe, model, tokenizer, weights: dict | None) -> dict:
    """Save the model as trained (`-trained`), repair it in place with the recipe's post defense; what it did."""
    out = Path(recipe.output.dir)
    save_trained(model, tokenizer, out, recipe.lora.enabled, weights, suffix="-trained")
    info = build_post(recipe).repair(model, RepairContext(tokenizer, recipe.train.seed, recipe.train.max_length))
    return {"method": recipe.defense.post, **info}
