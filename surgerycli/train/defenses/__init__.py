"""The defense registry of `surgery finetune` (peft's `register_peft_method` pattern).

A defense is one module in this package: a `Defense` subclass that names itself, its recipe section
(a `Section` of typed options with defaults, `[<name>]` in the recipe), the metrics it logs, and the
hooks it overrides, registered with `@register_defense`. The recipe picks one with
`[defense] method = "<name>"`; the Trainer, the progress bar, metrics.jsonl, training.png, summary.json
and the sweep table read its metrics and label from here. Adding a defense is one module plus its name
in `BUILTIN`.

The hooks, each optional (the defaults are plain SFT):
  mix(examples, rng)         the fine-tuning mix before tokenization (mix safety samples in: SafeInstr)
  setup(ctx)                 once the model and tokenizer exist: read and tokenize the defense's own data
  training_step(trainer, model, inputs, num_items_in_batch)
                             one micro-step's forward(s) and backward(s); `trainer.sft_step(...)` is the
                             plain SFT step, to call once, before or after extra passes (an extra loss
                             term: Surgery; alternating datasets with a proximal term: Lisa; two passes
                             with a perturbation from the first: Vaccine, Booster). Extra values are
                             logged with `trainer.record(key, value)` under the keys in `metrics`.
  sink_mode                  True when training runs with the sink patch on (Surgery)
  state_dict() / load_state_dict(state)
                             what a resume needs beyond the weights and the optimizer (Lisa's anchors);
                             saved in every checkpoint as defense_state.pt
Draws of a defense's own batches are seeded by step (`draw_batch`), so a resumed run draws the same ones.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..sections import Section

if TYPE_CHECKING:
    import torch

    from ...data.chat import Messages
    from ...data.refsets import RefSet
    from ..recipe import Recipe

BUILTIN = ("sft", "surgery", "safeinstr", "lisa", "vaccine", "booster")  # modules here, each registering its name
_REGISTRY: dict[str, type[Defense]] = {}


@dataclass(frozen=True)
class Metric:
    """A value a defense logs each step: its key (metrics.jsonl, summary.json), label and format."""

    key: str
    label: str  # progress-bar label
    fmt: str = ".4f"
    axis: str = ""  # training.png's axis label (default: the key)
    limits: tuple[float, float] | None = None  # training.png's axis range (default: the data's)


class NoOptions(Section):
    """The section of a defense that has no options."""


@dataclass
class DefenseContext:
    """What `Defense.setup` may use: the loaded model and tokenizer, the recipe, the reference sets, and
    `encode`: chats -> tokenized training rows, exactly as the fine-tuning mix is tokenized."""

    model: torch.nn.Module
    tokenizer: object
    recipe: Recipe
    harmful_reference: RefSet
    harmless_reference: RefSet
    encode: Callable[[list[Messages]], list[dict]] = lambda chats: []


def draw_batch(rows: list[dict], k: int, draw: int, seed: int, pad_id: int) -> dict:
    """`k` rows drawn without replacement for micro-step `draw`, padded into a batch; the same rows for the
    same (seed, draw), so a resumed run trains on what an uninterrupted one would."""
    from ...data.finetune import pad_batch

    rng = random.Random(seed * 1_000_003 + draw)
    return pad_batch(rng.sample(rows, min(k, len(rows))), pad_id)


def micro_step(trainer) -> int:
    """The index of the current micro-batch over the whole run (optimizer step x accumulation + position)."""
    return trainer.state.global_step * trainer.args.gradient_accumulation_steps + trainer.micro_index


class Defense:
    """One defense. Subclass, set the class attributes, override the hooks it needs."""

    name: ClassVar[str]  # the recipe's `defense.method` and the sweep's `--methods` name
    title: ClassVar[str]  # shown in tables and plots
    stage: ClassVar[str] = "finetune"  # "finetune": runs in the user's fine-tuning; "align": replaces alignment SFT
    options_class: ClassVar[type[Section]] = NoOptions
    metrics: ClassVar[tuple[Metric, ...]] = ()

    def __init__(self, options: Section, recipe: Recipe):
        self.options = options
        self.recipe = recipe

    def label(self) -> str:
        """The method as tables and plots show it (with its key option, where one matters)."""
        return self.title

    def plan(self) -> list[tuple[str, str, str]]:
        """(part, samples, source) rows the dry run adds to the fine-tuning mix table."""
        return []

    @property
    def sink_mode(self) -> bool:
        return False

    def mix(self, examples: list[Messages], rng: random.Random) -> list[Messages]:
        return examples

    def setup(self, ctx: DefenseContext) -> None:
        pass

    def training_step(self, trainer, model, inputs, num_items_in_batch=None):
        return trainer.sft_step(model, inputs, num_items_in_batch)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def register_defense(cls: type[Defense]) -> type[Defense]:
    """Class decorator: make `cls` a method the recipe and the sweep can name."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"defense {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Defense]]:
    """Every registered defense by name (the built-in modules imported on first use)."""
    for module in BUILTIN:
        importlib.import_module(f"{__name__}.{module}")
    order = [n for n in BUILTIN if n in _REGISTRY] + [n for n in _REGISTRY if n not in BUILTIN]
    return {name: _REGISTRY[name] for name in order}


def build_defense(recipe: Recipe) -> Defense:
    """The recipe's chosen defense, with its options."""
    return registry()[recipe.defense.method](recipe.options, recipe)
