"""`surgery finetune`: small builders, each taking a recipe section, from the recipe to what the Trainer runs.

Data builders run before any model loads, so bad input fails first.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from rich.table import Table

from ..data.chat import Messages, with_system
from ..data.finetune import build_mix, read_examples, tokenize_example
from ..data.refsets import RefSet, reference_pools
from ..errors import InputError
from ..models import DTYPES, load_model, read_chat_template
from .defenses import Defense, registry
from .recipe import Recipe
from .sections import DataSection, LoraSection, MeasureSection, ModelSection, QuantizationSection, TrainSection

def build_defense(recipe: Recipe) -> Defense:
    """The recipe's chosen defense, with its options (and the `[measure]` keys, for a defense that measures)."""
    cls = registry()[recipe.defense.method]
    measure = recipe.measure.model_dump() if cls.measures else {}
    return cls(**recipe.methods[cls.name].model_dump(), **measure)


def build_examples(data: DataSection, seed: int, defense: Defense) -> tuple[list[Messages], int, int]:
    """The shuffled fine-tuning mix (after the defense's `mix` hook), its harmful count, and how many examples
    the defense added."""
    benign = read_examples(data.benign, data.benign_format)
    harmful = read_examples(data.harmful, "auto", role="harmful") if data.harmful else []
    mix, n_harmful = build_mix(benign, harmful, data.poison_ratio, data.num_samples, seed)
    mixed = defense.mix(mix, random.Random(seed))
    return mixed, n_harmful, len(mixed) - len(mix)


def build_references(measure: MeasureSection, seed: int) -> tuple[RefSet, RefSet]:
    """Both reference sets of the `[measure]` section (`data.refsets.reference_pools`)."""
    return reference_pools(measure.harmful_reference, measure.harmless_reference, measure.reference_rows, seed)


def build_model(model: ModelSection, quantization: QuantizationSection, lora: LoraSection,
                train: TrainSection, device: torch.device):
    """(model in train mode, tokenizer): peft LoRA (QLoRA when `quantization.load_in_4bit`), or the model
    itself with every parameter trainable when `lora.enabled` is false."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    set_seed(train.seed)  # LoRA A matrices are drawn here
    template = read_chat_template(model.chat_template, "model.chat_template") if model.chat_template else None
    loaded, tokenizer = load_model(model.name, DTYPES[model.dtype], device, load_in_4bit=quantization.load_in_4bit,
                                   option="quantization.load_in_4bit", chat_template=template)
    if not lora.enabled:  # full fine-tuning: every parameter trains
        for p in loaded.parameters():
            p.requires_grad_(True)
        return loaded.train(), tokenizer
    if quantization.load_in_4bit:
        loaded = prepare_model_for_kbit_training(
            loaded, use_gradient_checkpointing=train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(loaded, config), tokenizer
    except ValueError as e:
        raise InputError(f"lora.target_modules: {str(e).splitlines()[0]}") from None


def build_dataset(tokenizer, mix: list[Messages], system_prompt: str, max_length: int) -> list[dict]:
    rows = [tokenize_example(tokenizer, with_system(m, system_prompt), max_length) for m in mix]
    kept = [r for r in rows if r is not None]
    if not kept:
        raise InputError(f"train.max_length: {max_length} cuts every example before its answer")
    return kept


def build_training_args(train: TrainSection, out: Path, device: torch.device, dtype: str, trainer: dict | None = None):
    """TrainingArguments from the train section, with the recipe's `[trainer]` table passed through (already
    checked by name and type; what depends on this machine fails here as one `trainer.KEY` error).
    A tracker (`train.report_to`) gets every logged metric, the defense's included; TensorBoard writes its
    event files under OUT/checkpoints/runs/."""
    from transformers import TrainingArguments

    cuda = device.type == "cuda"
    try:
        return _training_args(TrainingArguments, train, out, cuda, dtype, trainer or {})
    except ValueError as e:  # TrainingArguments' own check of a passed-through value
        line = str(e).strip().splitlines()[0]
        key = next((k for k in (trainer or {}) if k in line), None)
        raise InputError(f"trainer.{key}: {line}" if key else f"trainer: {line}") from None


def _training_args(cls, train: TrainSection, out: Path, cuda: bool, dtype: str, trainer: dict):
    return cls(
        output_dir=str(out / "checkpoints"), num_train_epochs=train.epochs, max_steps=train.max_steps or -1,
        learning_rate=train.learning_rate, lr_scheduler_type=train.lr_scheduler, warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm,
        per_device_train_batch_size=train.batch_size, gradient_accumulation_steps=train.grad_accum,
        seed=train.seed, data_seed=train.seed, activation_checkpointing=train.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False}, logging_steps=train.logging_steps,
        save_strategy="steps", save_steps=train.save_steps, save_total_limit=train.save_total_limit,
        report_to=train.report_to, run_name=train.run_name or out.name, disable_tqdm=True,
        remove_unused_columns=False, use_cpu=not cuda, bf16=cuda and dtype == "bfloat16",
        fp16=cuda and dtype == "float16", **{"dataloader_num_workers": 0, **trainer},
    )


def mix_table(recipe: Recipe, defense: Defense, n_total: int, n_harmful: int, post: Defense | None = None) -> Table:
    data = recipe.data
    table = Table(title=f"Fine-tuning mix, defense: {defense.label()}")
    for col, justify in (("part", "left"), ("samples", "right"), ("source", "left")):
        table.add_column(col, justify=justify)
    table.add_row("benign", str(n_total - n_harmful), f"{data.benign} ({data.benign_format})")
    table.add_row("harmful", str(n_harmful), str(data.harmful or "-"))
    table.add_row("total", str(n_total), f"poison_ratio {data.poison_ratio:g}, seed {recipe.train.seed}")
    for row in [*defense.plan(recipe), *(post.plan(recipe) if post else [])]:
        table.add_row(*row)
    return table
