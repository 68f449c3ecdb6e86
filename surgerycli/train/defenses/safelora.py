"""`[defense] post = "safelora"`: Safe LoRA, each LoRA update projected onto the alignment subspace where it strays.

Paper: Hsu et al., "Safe LoRA: the Silver Lining of Reducing Safety Risks when Fine-tuning Large Language
Models", NeurIPS 2024; authors' code: github.com/IBM/SafeLoRA (`SafeLoRA.get_aligned_matrix`,
`projected_weighted`). For each layer the adapter trains, V = W_aligned - W_unaligned (the alignment's own
update of that weight) gives the projection C = V V^T / ||V||_F (the authors' code divides by the Frobenius
norm); the layer's update B A is compared with its projection C B A by cosine similarity, and where that
similarity is lowest the adapter's B becomes C B. No training. Defaults from the authors' config.py:
`select = "number"`, the 10 layers of lowest similarity (`num_layers`); `select = "threshold"` projects every
layer at or below `threshold` (0.5). Layers are matched by name (the authors pair them by parameter order).
The aligned weights are the adapter's base; the unaligned model is `unaligned_model` (in a sweep with an
alignment recipe: that recipe's model, which the alignment started from).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from ...errors import InputError
from ...models import load_model
from ..sections import Exists, Section
from . import Defense, RepairContext, register_defense


class SafeLoraOptions(Section):
    unaligned_model: Annotated[str | None, Exists("model")] = None  # the model before alignment (required)
    select: Literal["number", "threshold"] = "number"  # which layers are projected ([paper] number)
    num_layers: Annotated[int, Field(ge=1)] = 10  # with select = "number": the layers of lowest similarity ([paper] 10)
    threshold: Annotated[float, Field(ge=-1, le=1)] = 0.5  # with select = "threshold": similarity at or below it ([paper] 0.5)


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The layers a peft LoRA adapter wraps, by their name in the base model, each with lora_A and lora_B."""
    found = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer") and "default" in getattr(module, "lora_A", {}):
            found[name.removeprefix("base_model.model.")] = module
    return found


def dense_weight(layer: torch.nn.Module) -> torch.Tensor:
    """A base layer's weight in float, (out, in): a bitsandbytes 4-bit weight (QLoRA) is dequantized."""
    weight = layer.weight
    if getattr(weight, "quant_state", None) is None:
        return weight.detach().float()
    import bitsandbytes.functional as bnbf  # only where a 4-bit model is loaded, so bitsandbytes is there

    return bnbf.dequantize_4bit(weight.data, weight.quant_state).float()


def projection(aligned: torch.Tensor, unaligned: torch.Tensor) -> torch.Tensor:
    """C = V V^T / ||V||_F with V = aligned - unaligned, (out, out)."""
    v = (aligned - unaligned).double()
    return v @ v.T / torch.linalg.norm(v)


def similarity(c: torch.Tensor, b: torch.Tensor, a: torch.Tensor) -> float:
    """Cosine similarity between the projected update C B A and the update B A, flattened, to 5 decimals."""
    update = b.double() @ a.double()
    return round(float(torch.nn.functional.cosine_similarity((c @ update).reshape(1, -1), update.reshape(1, -1))), 5)


def chosen(cosines: dict[str, float], select: str, num_layers: int, threshold: float) -> set[str]:
    """The layers to project: those at or below the num_layers-th lowest similarity, or the threshold."""
    if select == "threshold":
        return {n for n, c in cosines.items() if c <= threshold}
    bound = sorted(cosines.values())[:num_layers][-1]
    return {n for n, c in cosines.items() if c <= bound}


@register_defense
class SafeLoRA(Defense):
    name = "safelora"
    title = "Safe LoRA"
    stage = "post"
    options_class = SafeLoraOptions
    main_option = "num_layers"

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        o = self.options
        which = f"the {o.num_layers} least aligned layers" if o.select == "number" else f"layers at cos <= {o.threshold:g}"
        return [("after training", "-", f"Safe LoRA: {which} projected, alignment = model - {o.unaligned_model}")]

    def repair(self, model: torch.nn.Module, ctx: RepairContext) -> dict:
        o = self.options
        layers = lora_layers(model)
        if not layers:
            raise InputError("safelora: projects a LoRA adapter's updates; this run trained full weights (lora.enabled "
                             "= false)")
        if o.unaligned_model is None:
            raise InputError("safelora.unaligned_model: required: the model before alignment (the alignment "
                             "subspace is the aligned model minus it)")
        unaligned, _ = load_model(o.unaligned_model, torch.float32, torch.device("cpu"))
        before = dict(unaligned.named_modules())
        projections, cosines = {}, {}
        for name, layer in layers.items():
            aligned = dense_weight(layer.base_layer).cpu()
            if name not in before or before[name].weight.shape != aligned.shape:
                raise InputError(f"safelora.unaligned_model: {o.unaligned_model} has no layer {name} of the adapter "
                                 f"base's shape (another architecture?)")
            c = projection(aligned, before[name].weight.detach())
            projections[name] = c
            cosines[name] = similarity(c, layer.lora_B["default"].weight.detach().cpu(),
                                       layer.lora_A["default"].weight.detach().cpu())
        picked = chosen(cosines, o.select, o.num_layers, o.threshold)
        with torch.no_grad():
            for name in picked:
                b = layers[name].lora_B["default"].weight
                b.copy_((projections[name] @ b.detach().cpu().double()).to(b.dtype))
        return {"layers": len(layers), "projected": sorted(picked), "similarity": cosines}
