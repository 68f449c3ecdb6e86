"""The defense registry of `surgery finetune` and of the Python API (peft's `register_peft_method` pattern).

A defense is one module in this package: a `Defense` subclass that names itself, its recipe section
(a `Section` of typed options with defaults, `[<name>]` in the recipe), the metrics it logs, and the
hooks it overrides, registered with `@register_defense`. The recipe picks one with
`[defense] method = "<name>"`; the Python API builds one by its class name with the same options as
keywords (`Surgery(alpha=300)`), validated as the recipe is. The Trainer, the progress bar, metrics.jsonl,
training.png, summary.json and the sweep table read its metrics and label from here. Adding a defense is
one module plus its name in `BUILTIN`.

The hooks, each optional (the defaults are plain SFT):
  extra_examples(n, rng)     samples to mix into the user's n fine-tuning examples (SafeInstr's safety samples)
  setup(ctx)                 once the model and tokenizer exist: read and tokenize the defense's own data
  training_step(step, model) one micro-step's forward(s) and backward(s) through the `train.step.Step`
                             interface; `step.sft()` is the host's plain SFT step, to call once, before or
                             after extra passes (an extra loss term: Surgery; alternating datasets with a
                             proximal term: Lisa; two passes with a perturbation from the first: Vaccine,
                             Booster). Extra values are logged with `step.record(key, value)` under the
                             keys in `metrics`.
  state_dict() / load_state_dict(state)
                             what a resume needs beyond the weights and the optimizer (Lisa's anchors);
                             saved in every checkpoint as defense_state.pt
  repair(model, ctx)         a post-fine-tuning defense (stage "post": Antidote, Safe LoRA): change the trained
                             model in place after any trainer; a dict of what it did. `apply(model, tokenizer)`
                             is the Python API's call, `[defense] post = "<name>"` the recipe's.

Stages: "align" (replaces the alignment's SFT: Vaccine, Booster), "finetune" (runs in the user's fine-tuning:
Surgery, Lisa, SafeInstr, SFT) and "post" (repairs the fine-tuned model). A sweep's `--methods a+b+c` chains
one defense per stage.
Draws of a defense's own batches are seeded by micro-step (`draw_batch`), so a resumed run draws the same ones.

A defense object is a value: its options, fixed when it is built. A trainer works on its own copy, and
`setup` and the hooks after it keep every per-run state on that copy.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ...data.finetune import pad_batch
from ...errors import InputError
from ..problems import build_sections
from ..sections import MeasureSection, Section
from ..step import Metric, Step

if TYPE_CHECKING:
    import torch

    from ...data.chat import Messages
    from ...data.refsets import RefSet

BUILTIN = ("sft", "surgery", "safeinstr", "lisa", "vaccine", "booster", "antidote", "safelora")  # modules here
STAGES = ("align", "finetune", "post")  # in the order a model goes through them
_REGISTRY: dict[str, type[Defense]] = {}


class NoOptions(Section):
    """The section of a defense that has no options."""


@dataclass
class DefenseContext:
    """What `Defense.setup` may use: the model and tokenizer, the run's seed, the training sequence length,
    and `encode`: chats -> tokenized training rows, exactly as the host's fine-tuning data is tokenized.
    `references`: the (harmful, harmless) reference pools when the caller has built them already; `mixed`:
    how many of the defense's `extra_examples` the fine-tuning data holds."""

    model: torch.nn.Module
    tokenizer: Any
    seed: int
    max_length: int
    encode: Callable[[list[Messages]], list[dict]]
    references: tuple[RefSet, RefSet] | None = None
    mixed: int = 0

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id, or its end-of-sequence id where it has none (as Llama's)."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id


@dataclass
class RepairContext:
    """What `Defense.repair` may use besides the model: the tokenizer (its chat template renders the defense's
    own samples), the run's seed and the sequence length its samples are cut to."""

    tokenizer: Any
    seed: int = 0
    max_length: int = 512


def draw_batch(rows: list[dict], k: int, draw: int, seed: int, pad_id: int) -> dict:
    """`k` rows drawn without replacement for micro-step `draw`, padded into a batch; the same rows for the
    same (seed, draw), so a resumed run trains on what an uninterrupted one would."""
    rng = random.Random(seed * 1_000_003 + draw)
    return pad_batch(rng.sample(rows, min(k, len(rows))), pad_id)


class Defense:
    """One defense. Subclass, set the class attributes, override the hooks it needs.

    Built with its options as keywords: the keys of its recipe section, plus those of `[measure]` when it
    uses the sink measurement (`measures`), with the recipe's defaults and its one-line errors.
    """

    name: ClassVar[str]  # the recipe's `defense.method` and the sweep's `--methods` name
    title: ClassVar[str]  # shown in tables and plots
    stage: ClassVar[str] = "finetune"  # "finetune": in the user's fine-tuning; "align": replaces alignment SFT;
    # "post": repairs the fine-tuned model (`repair`)
    options_class: ClassVar[type[Section]] = NoOptions
    metrics: ClassVar[tuple[Metric, ...]] = ()
    measures: ClassVar[bool] = False  # takes the [measure] keys (reference sets, sink position) too
    main_option: ClassVar[str | None] = None  # its main hyperparameter, the one a sweep varies (`--grid lisa.rho=...`)
    not_sharded: ClassVar[str | None] = None  # why it cannot run under FSDP2 (None: it can)

    def __init__(self, **options: Any) -> None:
        own = set(self.options_class.model_fields)
        known = own | (set(MeasureSection.model_fields) if self.measures else set())
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"{type(self).__name__}: unknown option {unknown[0]!r} (expected one of "
                             f"{', '.join(sorted(known))})")
        parts = {self.name: (self.options_class, {k: v for k, v in options.items() if k in own})}
        if self.measures:
            parts["measure"] = (MeasureSection, {k: v for k, v in options.items() if k not in own})
        sections = build_sections(type(self).__name__, parts)
        self.options, self.measure = sections[self.name], sections.get("measure")

    def label(self) -> str:
        """The method as tables and plots show it (with its key option, where one matters)."""
        return self.title

    def plan(self, recipe) -> list[tuple[str, str, str]]:
        """(part, samples, source) rows the dry run adds to the fine-tuning mix table; `recipe`: the validated
        recipe (`train.recipe.Recipe`)."""
        return []

    def extra_examples(self, n: int, rng: random.Random) -> list[Messages]:
        """Chats to mix into the user's `n` fine-tuning examples (none by default)."""
        return []

    def mix(self, examples: list[Messages], rng: random.Random) -> list[Messages]:
        """The fine-tuning mix with `extra_examples` shuffled in (the recipe's path; the API appends them to
        the host's dataset, which the Trainer's sampler shuffles)."""
        extra = self.extra_examples(len(examples), rng)
        if not extra:
            return examples
        mixed = examples + extra
        rng.shuffle(mixed)
        return mixed

    def setup(self, ctx: DefenseContext) -> None:
        pass

    def training_step(self, step: Step, model: torch.nn.Module) -> torch.Tensor:
        return step.sft()

    def repair(self, model: torch.nn.Module, ctx: RepairContext) -> dict:
        """A post-fine-tuning defense's change to the trained model, in place; what it did."""
        raise NotImplementedError(f"{type(self).__name__} is a {self.stage}-stage defense: it trains, it does not repair")

    def apply(self, model: torch.nn.Module, tokenizer, *, seed: int = 0, max_length: int = 512) -> dict:
        """The Python API of a post-fine-tuning defense: repair `model` (a peft model, or full weights) in place
        after any trainer; what it did (`repair`'s record)."""
        return self.repair(model, RepairContext(tokenizer, seed, max_length))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def register_defense(cls: type[Defense]) -> type[Defense]:
    """Class decorator: make `cls` a method the recipe, the sweep and the Python API can name."""
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
