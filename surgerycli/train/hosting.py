"""`from surgerycli import with_defense`: any defense inside a Hugging Face Trainer the user already has.

    trainer = with_defense(SFTTrainer)(model=..., args=..., train_dataset=..., processing_class=tokenizer,
                                       defense=Surgery(alpha=300))

`with_defense(cls)` returns a subclass of `cls` whose first base is `DefenseMixin` (`surgery finetune`'s own
trainer is one too). The mixin overrides three public Trainer methods: `training_step` (the defense's step
around the host's own, through `train.step.Step`), `log` (the defense's metrics, averaged per logging
interval; under TRL they go through its own metric store), `train` (the defense's state from the checkpoint
it resumes). What it needs of the Trainer's internals (writing the defense's state into a checkpoint, the
device move, the accumulation count, TRL's metric store) goes through `upstream.hf_trainer`, where each
name is listed and guarded by a test.

The defense object the caller passes is a value: the trainer works on its own copy (`trainer.defense`),
which holds every per-run state (SafeInstr's mixed count, Surgery's reference ids, Lisa's anchors), so the
same object passed to a second trainer behaves there as in the first.

What stays the host's: its loss and its normalization (loss type, `num_items_in_batch`, Liger), its data
collator, and its attention implementation (Surgery switches to the sink attention only around its
reference pass). Under DDP every pass of a micro-step runs on the module inside `no_sync()` and the
gradients are all-reduced once per optimizer step (`train.distributed`): a defense's extra passes call
submodules or back-propagate more than once, which DDP's own hook would miss or count twice. Under FSDP2
the defense gets the sharded root module and runs every pass through it; FSDP reduce-scatters each backward
itself. DeepSpeed is refused: its engine steps at every backward, and a defense adds backwards. FSDP1 and
4-bit models under FSDP are refused.
"""

from __future__ import annotations

import copy
import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..data.chat import render
from ..data.finetune import tokenize_example
from ..errors import InputError
from ..upstream.hf_trainer import (
    TrainerHooks, accumulation_steps, enable_fsdp, fsdp_enabled, loss_context, prepare_inputs, trl_metrics,
)
from .builders import build_dataset
from .defenses import Defense, DefenseContext
from .distributed import is_ddp, is_main, rank, shard_on_cpu, sync_gradients

DEFENSE_STATE = "defense_state.pt"  # a checkpoint's file for Defense.state_dict()
T = TypeVar("T")


@dataclass
class HostStep:
    """`train.step.Step` over a transformers Trainer that runs a `DefenseMixin`."""

    trainer: Any
    model: torch.nn.Module  # the module itself (under DDP, the wrapped one's .module)
    inputs: dict
    num_items_in_batch: Any
    micro_step: int

    @property
    def global_step(self) -> int:
        return self.trainer.state.global_step

    @property
    def max_steps(self) -> int:
        return self.trainer.state.max_steps

    @property
    def accumulation(self) -> int:
        return accumulation_steps(self.trainer)

    @property
    def batch_size(self) -> int:
        return self.trainer.args.per_device_train_batch_size

    @property
    def seed(self) -> int:
        return self.trainer.args.seed

    def sft(self, inputs: dict | None = None) -> torch.Tensor:
        # a batch of the defense's own is normalized as its own (no num_items_in_batch counted for another)
        if inputs is None:
            return self.trainer.host_training_step(self.model, self.inputs, self.num_items_in_batch)
        return self.trainer.host_training_step(self.model, inputs, None)

    def backward(self, loss: torch.Tensor) -> None:
        self.trainer.accelerator.backward(loss)

    def context(self):
        return loss_context(self.trainer)

    def prepare(self, batch: dict) -> dict:
        return prepare_inputs(self.trainer, batch)

    def record(self, key: str, value: float) -> None:
        self.trainer.record(key, value)

    def count_tokens(self, kind: str, n: int) -> None:
        self.trainer.token_counts[kind] = self.trainer.token_counts.get(kind, 0) + n


class DefenseMixin(TrainerHooks):
    """The defense's step, metrics and state inside a transformers Trainer; first base of `with_defense(cls)`."""

    def __init__(self, *args, defense: Defense, **kwargs):
        if not isinstance(defense, Defense):
            raise TypeError(f"defense: expected a Defense (e.g. surgerycli.Surgery()), got {type(defense).__name__}")
        if defense.stage == "post":  # it would train as plain SFT and repair nothing, silently
            raise TypeError(f"with_defense: {type(defense).__name__} repairs a model after training; call "
                            f"{type(defense).__name__}(...).apply(model, tokenizer) after trainer.train()")
        if len(args) > 3 and type(defense).extra_examples is not Defense.extra_examples:
            raise TypeError(f"with_defense: {type(defense).__name__} mixes samples into train_dataset; pass it (and "
                            f"what follows it) by keyword")
        defense = copy.deepcopy(defense)  # this run's own: the caller's object stays a value
        mixed = self.mix_into_dataset(defense, kwargs)
        super().__init__(*args, **kwargs)
        self.defense = defense
        self._check_engine()
        self._defense_metrics: dict[str, list[float]] = {m.key: [] for m in defense.metrics}
        self.token_counts = {"train": 0, "reference": 0}
        self.micro_index, self._micro_step = -1, -1  # position of the micro-batch within its optimizer step
        defense.setup(self.defense_context(mixed))

    def mix_into_dataset(self, defense: Defense, kwargs: dict) -> int:
        """Append the defense's extra examples to `kwargs["train_dataset"]`; how many (`surgery finetune`'s
        trainer mixed them into its data already, and says how many)."""
        return _mix_into_dataset(defense, kwargs)

    def defense_context(self, mixed: int = 0) -> DefenseContext:
        """What the defense's setup gets: the host's model and tokenizer, seed and sequence length."""
        tokenizer = _tokenizer(self.processing_class)
        if tokenizer is None and type(self.defense).setup is not Defense.setup:
            raise InputError(f"with_defense: {type(self.defense).__name__} tokenizes data of its own; pass the "
                             f"tokenizer as processing_class")
        max_length = getattr(self.args, "max_length", None) or 512  # TRL's SFTConfig has one; a plain Trainer not
        return DefenseContext(self.model, tokenizer, self.args.seed, max_length,
                              encode=lambda chats: build_dataset(tokenizer, chats, "", max_length), mixed=mixed)

    def accelerator_ready(self) -> None:
        if shard_on_cpu(self.accelerator, self.args.fsdp_plugin_args):  # torchrun on CPU: FSDP2 as on a GPU
            enable_fsdp(self)

    def _check_engine(self) -> None:
        from accelerate.utils import DistributedType

        kind = self.accelerator.distributed_type
        if kind == DistributedType.DEEPSPEED:
            raise InputError("DeepSpeed: not supported with a defense (its engine steps at every backward, and a "
                             "defense adds backwards); use FSDP2, DDP (torchrun, accelerate launch) or one process")
        if kind == DistributedType.FSDP:
            if self.accelerator.state.fsdp_plugin.fsdp_version != 2:
                raise InputError("FSDP1: not supported with a defense; set fsdp_config.version = 2 (or "
                                 "fsdp_version: 2 in accelerate's config)")
            if getattr(self.model, "is_loaded_in_4bit", False):
                raise InputError("quantization.load_in_4bit with FSDP: FSDP2 loses bitsandbytes' quant_state "
                                 "(bitsandbytes#1945); use QLoRA with DDP, or LoRA / full fine-tuning with FSDP")
            if self.defense.not_sharded:
                raise InputError(f"{type(self.defense).__name__} with FSDP: {self.defense.not_sharded}; use DDP "
                                 f"(torchrun, recipes/accelerate/ddp.yaml) or one process")
        elif kind not in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
            raise InputError(f"accelerate distributed_type {kind.value}: a defense runs on one process, with DDP "
                             f"(recipes/accelerate/ddp.yaml, or torchrun) or with FSDP2 (recipes/accelerate/fsdp.yaml)")

    def record(self, key: str, value: float) -> None:
        """Log `value` under `key`, averaged over the logging interval (TRL's metric store when the host has one)."""
        host = trl_metrics(self)
        store = host if host is not None else self._defense_metrics  # TRL's log averages and clears its own
        store.setdefault(key, []).append(value)

    def host_training_step(self, model, inputs, num_items_in_batch=None):
        """The host class's own micro-step (SFT forward and backward)."""
        return super().training_step(model, inputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._micro_step != self.state.global_step:
            self._micro_step, self.micro_index = self.state.global_step, 0
        else:
            self.micro_index += 1
        micro = self.state.global_step * self.args.gradient_accumulation_steps + self.micro_index
        # train mode before any pass a defense runs ahead of the host's own step (which sets it too)
        model.train()
        if not is_ddp(model):  # one process, or FSDP2 (the root module; it reduce-scatters every backward)
            return self.defense.training_step(HostStep(self, model, inputs, num_items_in_batch, micro), model)
        with model.no_sync():  # every pass accumulates locally; one all-reduce when the optimizer steps
            loss = self.defense.training_step(HostStep(self, model.module, inputs, num_items_in_batch, micro),
                                              model.module)
        if self.accelerator.sync_gradients:
            sync_gradients(model)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the means since the last one
            for key, values in self._defense_metrics.items():
                if values:  # a metric with no value this interval is left out: trackers take numbers only
                    logs[key] = sum(values) / len(values)
                values.clear()
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        folder = resume_from_checkpoint
        if folder is True:
            from transformers.trainer_utils import get_last_checkpoint  # transformers' own, loaded with the Trainer

            folder = get_last_checkpoint(self.args.output_dir)
        if folder and (Path(folder) / self._state_file()).is_file():
            self.defense.load_state_dict(torch.load(Path(folder) / self._state_file(), weights_only=True))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _state_file(self) -> str:
        """The defense's state file in a checkpoint: one per rank under FSDP, where each holds its shards."""
        return f"defense_state-rank{rank()}.pt" if fsdp_enabled(self) else DEFENSE_STATE

    def before_checkpoint_saved(self, folder: Path) -> None:
        state = self.defense.state_dict()
        if state and (is_main() or fsdp_enabled(self)):
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(state, folder / self._state_file())


@functools.cache
def with_defense(trainer_class: type[T]) -> type[T]:
    """`trainer_class` (transformers.Trainer, TRL's SFTTrainer, or any subclass) taking a `defense=` keyword:
    a subclass whose first base is `DefenseMixin`. The same class for the same argument."""
    from transformers import Trainer

    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        raise TypeError(f"with_defense: expected a transformers.Trainer subclass, got {trainer_class!r}")
    if issubclass(trainer_class, DefenseMixin):
        return trainer_class
    return type(f"{trainer_class.__name__}WithDefense", (DefenseMixin, trainer_class),
                {"__module__": __name__, "__doc__": f"{trainer_class.__name__} with a defense (surgerycli.with_defense)."})


def _tokenizer(processing_class):
    """The tokenizer of a tokenizer or of a processor (which holds one)."""
    return getattr(processing_class, "tokenizer", processing_class)


def _mix_into_dataset(defense: Defense, kwargs: dict) -> int:
    """Append the defense's extra examples (SafeInstr's safety samples) to the host's train_dataset, in its
    format: `messages`, `prompt` + `completion` (conversational or text), or tokenized `input_ids`. How many."""
    dataset = kwargs.get("train_dataset")
    if dataset is None:
        return 0
    if not hasattr(dataset, "__len__"):
        if type(defense).extra_examples is Defense.extra_examples:
            return 0
        raise InputError(f"train_dataset: {type(defense).__name__} mixes samples in, which needs a sized dataset "
                         f"(a datasets.Dataset or a list), got {type(dataset).__name__}")
    seed = getattr(kwargs.get("args"), "seed", 42)
    extra = defense.extra_examples(len(dataset), random.Random(seed))
    if extra:
        kwargs["train_dataset"] = append_examples(dataset, extra, _tokenizer(kwargs.get("processing_class")),
                                                  getattr(kwargs.get("args"), "max_length", None) or 512)
    return len(extra)


def append_examples(dataset, chats: list, tokenizer, max_length: int):
    """`dataset` (a datasets.Dataset or a list of dicts) with `chats` appended as rows of its own format."""
    columns = list(dataset.column_names) if hasattr(dataset, "column_names") else list(dataset[0]) if len(dataset) else []
    first = dataset[0] if len(dataset) else {}
    if "messages" in columns:
        rows = [{"messages": chat} for chat in chats]
    elif {"prompt", "completion"} <= set(columns) and isinstance(first.get("prompt"), list):
        rows = [{"prompt": chat[:-1], "completion": chat[-1:]} for chat in chats]
    elif {"prompt", "completion"} <= set(columns):
        rows = [{"prompt": (p := render(tokenizer, chat[:-1])), "completion": render(tokenizer, chat)[len(p):]}
                for chat in chats]
    elif "input_ids" in columns:
        rows = [r for r in (tokenize_example(tokenizer, chat, max_length) for chat in chats) if r is not None]
        if "attention_mask" in columns:
            rows = [{**r, "attention_mask": [1] * len(r["input_ids"])} for r in rows]
    else:
        raise InputError(f"train_dataset: cannot mix samples into a dataset with columns {columns} (expected "
                         f"messages, prompt + completion, or input_ids)")
    rows = [{c: row.get(c) for c in columns} for row in rows]
    if isinstance(dataset, list):
        return dataset + rows
    from datasets import Dataset, concatenate_datasets

    return concatenate_datasets([dataset, Dataset.from_list(rows, features=dataset.features)])
