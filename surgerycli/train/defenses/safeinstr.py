"""`[defense] method = "safeinstr"`: SafeInstr, safety samples mixed into the user's fine-tuning data.

Paper: Bianchi et al., "Safety-Tuned LLaMAs: Lessons From Improving the Safety of Large Language Models
that Follow Instructions", ICLR 2024 (github.com/vinid/safety-tuned-llamas): adding a small share of
safety demonstrations (harmful instruction + refusal) to instruction tuning; about 3% of the training
set already restores most of the refusals, the share this module adds by default. Used as a
fine-tuning-stage baseline by Lisa, Booster and Surgery.

Options: `safety_data` (default: built-in Do-Not-Answer refusals, disjoint from the held-out HarmBench
evaluation prompts; a file is read as a harmless set: BeaverTails' safe rows) and `num` (default:
round(0.03 * data.num_samples)). The samples are drawn with the run's seed and shuffled into the mix.
"""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import Field

from ...data.chat import Messages
from ...data.pairs import REFUSALS_SET, describe, named_pairs
from ...errors import InputError
from ..sections import PairsSource, Section
from . import Defense, register_defense

SHARE = 0.03  # [paper] Bianchi et al.: 3% safety samples


class SafeInstrOptions(Section):
    safety_data: PairsSource = REFUSALS_SET
    num: Annotated[int | None, Field(ge=0)] = None  # default: round(0.03 * data.num_samples)


@register_defense
class SafeInstr(Defense):
    name = "safeinstr"
    title = "SafeInstr"
    options_class = SafeInstrOptions

    def count(self) -> int:
        return self.options.num if self.options.num is not None else round(SHARE * self.recipe.data.num_samples)

    def plan(self) -> list[tuple[str, str, str]]:
        return [("safety samples", str(self.count()), f"SafeInstr: {describe(self.options.safety_data)}, mixed in")]

    def mix(self, examples: list[Messages], rng: random.Random) -> list[Messages]:
        pool = named_pairs(self.options.safety_data, "safeinstr.safety_data", "harmless")
        n = self.count()
        if n > len(pool):
            raise InputError(f"safeinstr.num: {n} safety samples asked, {self.options.safety_data} has {len(pool)}")
        mixed = examples + rng.sample(pool, n)
        rng.shuffle(mixed)
        return mixed
