"""`[defense] method = "safeinstr"`: SafeInstr, safety samples mixed into the user's fine-tuning data.

Paper: Bianchi et al., "Safety-Tuned LLaMAs: Lessons From Improving the Safety of Large Language Models
that Follow Instructions", ICLR 2024 (github.com/vinid/safety-tuned-llamas): adding a small share of
safety demonstrations (harmful instruction + refusal) to instruction tuning; about 3% of the training
set already restores most of the refusals, the share this module adds by default. Used as a
fine-tuning-stage baseline by Lisa, Booster and Surgery.

Options: `safety_data` (default: built-in Do-Not-Answer refusals, disjoint from the held-out HarmBench
evaluation prompts; a file is read as a harmless set: BeaverTails' safe rows) and `num` (default:
round(0.03 * the number of the user's examples)). The samples are drawn with the run's seed and shuffled
into the recipe's mix; through the Python API they are appended to the host's dataset, which its sampler
shuffles. The `safety_samples` metric (summary.json's final metrics) says how many the run's data holds.
"""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import Field

from ...data.chat import Messages
from ...data.pairs import REFUSALS_SET, describe, named_pairs
from ...errors import InputError
from ..sections import PairsSource, Section
from ..step import Step
from . import Defense, DefenseContext, Metric, register_defense

SHARE = 0.03  # [paper] Bianchi et al.: 3% safety samples


class SafeInstrOptions(Section):
    safety_data: PairsSource = REFUSALS_SET  # harmful prompts with refusals, mixed into the fine-tuning set
    num: Annotated[int | None, Field(ge=0)] = None  # safety examples added; unset: round(0.03 * the user's examples)


@register_defense
class SafeInstr(Defense):
    name = "safeinstr"
    title = "SafeInstr"
    options_class = SafeInstrOptions
    main_option = "num"
    metrics = (Metric("safety_samples", "safety", ".0f", "safety samples mixed into the fine-tuning data"),)

    def count(self, n: int) -> int:
        """Safety samples for `n` user examples: safeinstr.num, else 3% of them."""
        return self.options.num if self.options.num is not None else round(SHARE * n)

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        n = self.count(recipe.data.num_samples)
        return [("safety samples", str(n), f"SafeInstr: {describe(self.options.safety_data)}, mixed in")]

    def extra_examples(self, n: int, rng: random.Random) -> list[Messages]:
        pool = named_pairs(self.options.safety_data, "safeinstr.safety_data", "harmless")
        k = self.count(n)
        if k > len(pool):
            raise InputError(f"safeinstr.num: {k} safety samples asked, {self.options.safety_data} has {len(pool)}")
        return rng.sample(pool, k)

    def mix(self, examples: list[Messages], rng: random.Random) -> list[Messages]:
        mixed = examples + self.extra_examples(len(examples), rng)
        rng.shuffle(mixed)  # also with none added, as the mix has always been drawn
        return mixed

    def setup(self, ctx: DefenseContext) -> None:
        self.mixed = ctx.mixed  # on this run's copy of the defense

    def training_step(self, step: Step, model):
        step.record("safety_samples", float(self.mixed))
        return step.sft()
