"""`[defense] method = "sft"`: no defense. Plain supervised fine-tuning on the recipe's mix, the attack as is.

The baseline every harmful-fine-tuning paper reports first (Vaccine, Lisa, Booster, Surgery). It is
itself a registry entry, and the smallest example of one: a name, a title, and the default hooks.
"""

from __future__ import annotations

from . import Defense, register_defense


@register_defense
class SFT(Defense):
    name = "sft"
    title = "SFT"

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        return [("reference / step", "-", "none (SFT: no defense)")]
