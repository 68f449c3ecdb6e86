"""`surgery finetune RECIPE.toml`: QLoRA fine-tuning with the Surgery regularizer (or plain SFT).

The recipe is validated and every data file read before a model loads; values then flow as plain
arguments through small builders (data, model, regularizer, trainer). Outputs go to `output.dir`, each
file written whole or not at all.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .errors import InputError, atomic_write_text
from .finetune_data import build_mix, read_examples, tokenize_example, with_system
from .finetune_report import (
    MetricsCallback, RichProgressCallback, last_checkpoint, read_metrics, save_folder, truncate_metrics,
    write_training_plot,
)
from .recipe import dump_recipe, load_recipe
from .refsets import Messages, RefSet, named_refset, sample

REFERENCE_POOL = 1000  # reference samples kept per set, as the paper keeps the first 1000 of each


def build_examples(benign: str, benign_format: str, harmful: str | None, poison_ratio: float,
                   num_samples: int, seed: int) -> tuple[list[Messages], int]:
    """The shuffled fine-tuning mix and its harmful count; InputError for bad data files."""
    benign_rows = read_examples(benign, benign_format)
    harmful_rows = read_examples(harmful, "auto", harmful=True) if harmful else []
    return build_mix(benign_rows, harmful_rows, poison_ratio, num_samples, seed)


def build_references(harmful_reference: str, harmless_reference: str, seed: int) -> tuple[RefSet, RefSet]:
    """Both reference sets, at most REFERENCE_POOL samples each (seeded)."""
    harm, safe = named_refset(harmful_reference, is_safe=False), named_refset(harmless_reference, is_safe=True)
    return sample(harm, REFERENCE_POOL, seed), sample(safe, REFERENCE_POOL, seed)


def build_model(name: str, dtype: str, load_in_4bit: bool, device: torch.device, *, r: int, alpha: float,
                dropout: float, target_modules: str | list[str], gradient_checkpointing: bool, seed: int):
    """(peft LoRA model in train mode, tokenizer); QLoRA when `load_in_4bit`."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    from .models import DTYPES, load_model

    set_seed(seed)  # LoRA A matrices are drawn here
    model, tokenizer = load_model(name, DTYPES[dtype], device, load_in_4bit=load_in_4bit)
    if load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, config)
    except ValueError as e:
        raise InputError(f"lora.target_modules: {str(e).splitlines()[0]}") from None
    return model, tokenizer


def build_dataset(tokenizer, mix: list[Messages], system_prompt: str, max_length: int) -> list[dict]:
    rows = [tokenize_example(tokenizer, with_system(m, system_prompt), max_length) for m in mix]
    kept = [r for r in rows if r is not None]
    if not kept:
        raise InputError(f"train.max_length: {max_length} cuts every example before its answer")
    return kept


def build_regularizer(tokenizer, harm: RefSet, safe: RefSet, *, alpha: float, sink_position: int, k: int,
                      max_length: int, seed: int):
    from .sinkstats import encode
    from .training import SinkRegularizer

    ids = {}
    for key, refset in (("surgery.harmful_reference", harm), ("surgery.harmless_reference", safe)):
        rows = [r for r in encode(tokenizer, refset.samples, max_length) if len(r) > sink_position + 1]
        if not rows:
            raise InputError(f"{key}: no sample has a token after the sink (surgery.sink_position {sink_position})")
        ids[key] = rows
    return SinkRegularizer(alpha=alpha, sink_position=sink_position, harmful=ids["surgery.harmful_reference"],
                           harmless=ids["surgery.harmless_reference"], k=k, pad_id=tokenizer.pad_token_id, seed=seed)


def build_training_args(out: Path, device: torch.device, dtype: str, *, epochs: float, learning_rate: float,
                        lr_scheduler: str, warmup_ratio: float, weight_decay: float, max_grad_norm: float,
                        batch_size: int, grad_accum: int, seed: int, gradient_checkpointing: bool,
                        logging_steps: int, save_steps: int, save_total_limit: int, max_steps: int | None):
    from transformers import TrainingArguments

    cuda = device.type == "cuda"
    return TrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=epochs, max_steps=max_steps or -1,
        learning_rate=learning_rate, lr_scheduler_type=lr_scheduler, warmup_steps=warmup_ratio,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, seed=seed, data_seed=seed,
        activation_checkpointing=gradient_checkpointing, activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=logging_steps, save_strategy="steps", save_steps=save_steps,
        save_total_limit=save_total_limit, report_to="none", disable_tqdm=True, remove_unused_columns=False,
        use_cpu=not cuda, bf16=cuda and dtype == "bfloat16", fp16=cuda and dtype == "float16",
        dataloader_num_workers=0,
    )


def mix_table(recipe: dict, n_total: int, n_harmful: int) -> Table:
    data, surgery = recipe["data"], recipe["surgery"]
    table = Table(title="Fine-tuning mix")
    table.add_column("part")
    table.add_column("samples", justify="right")
    table.add_column("source")
    table.add_row("benign", str(n_total - n_harmful), f"{data['benign']} ({data['benign_format']})")
    table.add_row("harmful", str(n_harmful), str(data["harmful"] or "-"))
    table.add_row("total", str(n_total), f"poison_ratio {data['poison_ratio']:g}, seed {recipe['train']['seed']}")
    if surgery["enabled"] and surgery["alpha"] > 0:
        k = surgery["reference_batch_size"]
        table.add_row("reference / step", f"{k} + {k}", f"Surgery alpha {surgery['alpha']:g}: "
                      f"{surgery['harmful_reference']} + {surgery['harmless_reference']}")
    else:
        table.add_row("reference / step", "-", "off (SFT baseline)")
    return table


def measure_record(model, tokenizer, name: str, harm: RefSet, safe: RefSet, *, n: int, seed: int,
                   max_length: int, sink_position: int, device: torch.device, console: Console) -> dict:
    """Sink statistics of the model as it is now, in the `surgery inspect --json` schema."""
    from .inspect_cmd import PROGRESS_COLUMNS, measure_refsets, result_record

    harm, safe = sample(harm, n, seed), sample(safe, n, seed)
    model.eval()
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True) as progress:
        summary = measure_refsets(model, tokenizer, harm, safe, max_length=max_length, batch_size=8,
                                  sink_position=sink_position, device=device, progress=progress,
                                  where="surgery.sink_position")
    return result_record(name, None, sink_position, model, harm, safe, summary)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def prepare_output(out: Path, resume: bool) -> Path | None:
    """Create `out`; the checkpoint to resume from (None: start fresh, old checkpoints removed)."""
    checkpoints = out / "checkpoints"
    resume_from = last_checkpoint(checkpoints) if resume and checkpoints.is_dir() else None
    if resume_from is None:
        shutil.rmtree(checkpoints, ignore_errors=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    else:
        truncate_metrics(out / "metrics.jsonl", int(resume_from.name.rsplit("-", 1)[-1]))
    out.mkdir(parents=True, exist_ok=True)
    return resume_from


def train(model, tokenizer, rows: list[dict], regularizer, out: Path, device: torch.device, dtype: str,
          train_values: dict, resume_from: Path | None, console: Console):
    """Run the Trainer (in sink mode when regularized); (trainer, wall seconds)."""
    from transformers import PrinterCallback

    from surgerycli.patches import set_sink_mode

    from .finetune_data import pad_batch
    from .training import SurgeryTrainer

    args = build_training_args(out, device, dtype, **{k: v for k, v in train_values.items() if k != "max_length"})
    trainer = SurgeryTrainer(
        model=model, args=args, train_dataset=rows, regularizer=regularizer,
        data_collator=lambda batch: pad_batch(batch, tokenizer.pad_token_id),
        callbacks=[RichProgressCallback(console), MetricsCallback(out / "metrics.jsonl")],
    )
    trainer.remove_callback(PrinterCallback)
    start = time.time()
    set_sink_mode(model, regularizer is not None)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        set_sink_mode(model, False)
    return trainer, time.time() - start


def run_summary(trainer, wall: float, records: list[dict], *, regularized: bool, resume_from: Path | None,
                samples: int, n_harmful: int, device: torch.device, before: dict | None,
                after: dict | None) -> dict:
    """summary.json: what ran, how much, how fast, and the positive-head counts around it."""
    tokens = trainer.tokens
    return {
        "method": "surgery" if regularized else "sft",
        "steps": trainer.state.global_step,
        "resumed_from": str(resume_from) if resume_from else None,
        "samples": samples,
        "harmful_samples": n_harmful,
        "tokens": tokens["train"],
        "reference_tokens": tokens["reference"],
        "wall_time_s": round(wall, 2),
        "tokens_per_s": round((tokens["train"] + tokens["reference"]) / max(wall, 1e-9), 2),
        "peak_memory_bytes": peak_memory_bytes(device),
        "device": str(device),
        "final_loss": records[-1]["loss"] if records else None,
        "positive_heads_before": before["positive_heads"] if before else None,
        "positive_heads_after": after["positive_heads"] if after else None,
    }


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def run_finetune(recipe_path: Path, overrides: list[str], output: str | None, dry_run: bool, resume: bool,
                 console: Console) -> dict | None:
    """Validate, fine-tune, write the outputs; the summary dict (None for a dry run)."""
    recipe = load_recipe(recipe_path, overrides, output)
    m, q, lora, d, s, t = (recipe[k] for k in ("model", "quantization", "lora", "data", "surgery", "train"))
    mix, n_harmful = build_examples(d["benign"], d["benign_format"], d["harmful"], d["poison_ratio"],
                                    d["num_samples"], t["seed"])
    regularized = s["enabled"] and s["alpha"] > 0
    harm, safe = build_references(s["harmful_reference"], s["harmless_reference"], t["seed"])
    out = Path(recipe["output"]["dir"])
    if out.exists() and not out.is_dir():
        raise InputError(f"output.dir {out}: is a file, expected a folder")
    if dry_run:
        console.print(dump_recipe(recipe), markup=False, highlight=False)
        console.print(mix_table(recipe, len(mix), n_harmful))
        return None

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # peft 0.21 still reads transformers' gradient_checkpointing aliases; the names, not the behaviour, changed
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with console.status(f"loading {m['name']}"):
        model, tokenizer = build_model(
            m["name"], m["dtype"], q["load_in_4bit"], device, r=lora["r"], alpha=lora["alpha"],
            dropout=lora["dropout"], target_modules=lora["target_modules"],
            gradient_checkpointing=t["gradient_checkpointing"], seed=t["seed"])
    rows = build_dataset(tokenizer, mix, d["system_prompt"], t["max_length"])
    regularizer = build_regularizer(tokenizer, harm, safe, alpha=s["alpha"], sink_position=s["sink_position"],
                                    k=s["reference_batch_size"], max_length=t["max_length"],
                                    seed=t["seed"]) if regularized else None
    resume_from = prepare_output(out, resume)
    atomic_write_text(out / "recipe.resolved.toml", dump_recipe(recipe))

    def measure() -> dict | None:
        if not s["measure_samples"]:
            return None
        return measure_record(model, tokenizer, m["name"], harm, safe, n=s["measure_samples"], seed=t["seed"],
                              max_length=t["max_length"], sink_position=s["sink_position"], device=device,
                              console=console)

    before = measure()
    if before is not None:
        write_json(out / "sink_before.json", before)
    trainer, wall = train(model, tokenizer, rows, regularizer, out, device, m["dtype"], t, resume_from, console)
    save_folder(out / "adapter", model.save_pretrained)
    save_folder(out / "tokenizer", tokenizer.save_pretrained)
    after = measure()
    if after is not None:
        write_json(out / "sink_after.json", {**after, "adapter": str(out / "adapter")})
    records = read_metrics(out / "metrics.jsonl")
    if records:
        method = f"Surgery (alpha {s['alpha']:g})" if regularized else "SFT"
        write_training_plot(out / "training.png", records, f"{Path(m['name']).name}: {method}")
    summary = run_summary(trainer, wall, records, regularized=regularized, resume_from=resume_from,
                          samples=len(rows), n_harmful=n_harmful, device=device, before=before, after=after)
    write_json(out / "summary.json", summary)
    return summary
