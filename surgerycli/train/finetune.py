"""`surgery finetune RECIPE.toml`: fine-tuning with the recipe's defense (Surgery, SFT, ...), end to end.

The recipe is validated and every data file read before a model loads; typed sections then flow
through the builders (data, model, defense, trainer). Outputs go to `output.dir`, each file written whole
or not at all. Library code shared by the finetune, sweep and demo commands. Under `accelerate launch` or
`torchrun` every rank trains and rank 0 alone writes (`train.distributed`).
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.text import Text
from transformers import PrinterCallback

from ..data.chat import with_system
from ..data.finetune import masked_parts, pad_batch, tokenize_example
from ..data.refsets import RefSet, sample
from ..errors import InputError
from ..files import FolderLock, atomic_write_text, write_json, writing
from ..models import load_tokenizer, read_chat_template
from ..progress import PROGRESS_COLUMNS
from ..report.training import write_training_plot
from ..sink import measure_refsets, result_record
from ..upstream.hf_trainer import fsdp_enabled
from .builders import (
    build_dataset, build_defense, build_examples, build_model, build_references, build_training_args, mix_table,
)
from .callbacks import (
    FiniteGuard, MetricsCallback, RichProgressCallback, kept_checkpoint, last_checkpoint, read_metrics, truncate_metrics,
)
from .defenses import Defense, DefenseContext
from .defenses.surgery import reference_length
from .distributed import barrier, held_bytes, is_main, local_device, strategy, world_size
from .loss import liger_available
from .monitor import PROBE_METRIC, HarmProbe, probe_prompts
from .recipe import Recipe, dump_recipe
from .repair import build_post, repair_trained
from .saving import save_trained
from .trainer import DefenseTrainer


def measure_record(model, tokenizer, recipe: Recipe, harm: RefSet, safe: RefSet, device: torch.device,
                   console: Console) -> dict | None:
    """Sink statistics of the model as it is now, in the `surgery inspect --json` schema (None: skipped)."""
    s = recipe.measure
    if not s.samples:
        return None
    harm, safe = sample(harm, s.samples, recipe.train.seed), sample(safe, s.samples, recipe.train.seed)
    model.eval()
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True) as progress:
        summary = measure_refsets(model, tokenizer, harm, safe, max_length=reference_length(s, recipe.train.max_length),
                                  batch_size=8, sink_position=s.sink_position, device=device, progress=progress,
                                  where="measure.sink_position")
    return result_record(recipe.model.name, None, s.sink_position, model, harm, safe, summary)


def metrics_of(defense: Defense, probe: list[str]) -> tuple:
    """What the run logs beyond the losses: the defense's metrics, then the probe's when it runs."""
    return (*defense.metrics, *((PROBE_METRIC,) if probe else ()))


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


def build_trainer(model, tokenizer, rows: list[dict], defense: Defense, context: DefenseContext, recipe: Recipe, *,
                  args, probe: list[str], console: Console):
    """The Trainer, with the defense set up (its data read and tokenized: errors come before any output is
    written) and the harmful-score probe when `probe` holds prompts."""
    out = Path(recipe.output.dir)
    metrics = metrics_of(defense, probe)
    trainer = DefenseTrainer(
        model=model, args=args, train_dataset=rows, defense=defense, context=context,
        loss=loss_kind(recipe.train, args.device),
        data_collator=lambda batch: pad_batch(batch, tokenizer.pad_token_id),
        callbacks=[RichProgressCallback(console, metrics), MetricsCallback(out / "metrics.jsonl", metrics)]
        if is_main() else [],  # rank 0 alone shows the bar and logs
    )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(FiniteGuard(trainer))
    # with DDP the other ranks go on to the next step and wait for rank 0 at its all-reduce; FSDP's forwards
    # gather weights from every rank, so each rank probes
    if probe and (is_main() or fsdp_enabled(trainer)):
        m = recipe.monitor
        trainer.add_callback(HarmProbe(trainer, tokenizer, probe, m.every_steps, m.max_new_tokens,
                                       recipe.data.system_prompt))
    return trainer


def run_summary(trainer, wall: float, records: list[dict], defense: Defense, *, resume_from: Path | None,
                samples: int, n_harmful: int, device: torch.device, before: dict | None, after: dict | None,
                held: int) -> dict:
    """summary.json: what ran, how much, how fast, the defense's last logged metrics, the positive heads."""
    tokens = trainer.token_counts
    last = records[-1] if records else {}
    return {
        "method": defense.name,
        "label": defense.label(),
        "steps": trainer.state.global_step,
        "resumed_from": str(resume_from) if resume_from else None,
        "samples": samples,
        "harmful_samples": n_harmful,
        "tokens": tokens["train"],
        "reference_tokens": tokens["reference"],
        "wall_time_s": round(wall, 2),
        "tokens_per_s": round((tokens["train"] + tokens["reference"]) / max(wall, 1e-9), 2),
        "probe_time_s": next((round(c.seconds, 2) for c in trainer.callback_handler.callbacks
                              if isinstance(c, HarmProbe)), None),
        "peak_memory_bytes": peak_memory_bytes(device),
        "device": str(device),
        "world_size": world_size(),
        "strategy": strategy(trainer.accelerator),
        "held_bytes_per_rank": held,
        "sft_loss_kind": trainer.loss_kind,
        "final_loss": last.get("loss"),
        "final_metrics": {m.key: last.get(m.key) for m in defense.metrics},
        "positive_heads_before": before["positive_heads"] if before else None,
        "positive_heads_after": after["positive_heads"] if after else None,
        "significant_positive_heads_before": (before or {}).get("significant_positive_heads"),
        "significant_positive_heads_after": (after or {}).get("significant_positive_heads"),
    }


def loss_kind(train, device: torch.device) -> str:
    """The SFT loss's implementation: `plain`, or with train.fused_cross_entropy Liger's kernel on CUDA when
    installed, else the chunked one (train.loss)."""
    if not train.fused_cross_entropy:
        return "plain"
    return "liger" if liger_available(device) else "chunked"


def check_fsdp(recipe: Recipe) -> None:
    """What `[trainer] fsdp` cannot run with, as one line each, before a model loads."""
    trainer = recipe.trainer or {}
    if not trainer.get("fsdp"):
        return
    if world_size() == 1:
        raise InputError("trainer.fsdp: FSDP shards the model across processes, and this is one; launch with "
                         "torchrun --nproc-per-node N or accelerate launch --config_file recipes/accelerate/fsdp.yaml")
    if recipe.defense.post:
        raise InputError(f"defense.post with trainer.fsdp: {recipe.defense.post} repairs the whole model, which FSDP "
                         f"holds in shards; run it with DDP or one process")
    if recipe.quantization.load_in_4bit:
        raise InputError("quantization.load_in_4bit with trainer.fsdp: FSDP2 loses bitsandbytes' quant_state "
                         "(bitsandbytes#1945); use QLoRA with DDP, or LoRA / full fine-tuning with FSDP")
    config = trainer.get("fsdp_config")
    if isinstance(config, dict) and config.get("activation_checkpointing") and recipe.train.gradient_checkpointing:
        raise InputError("trainer.fsdp_config.activation_checkpointing: FSDP's own checkpointing replaces "
                         "train.gradient_checkpointing (both would gather each layer twice); set it to false")


def show_example(recipe: Recipe, mix: list, console: Console) -> None:
    """One training example as the model gets it, rendered by the (possibly overridden) chat template, with
    the part masked from the loss between <<< and >>>."""
    template = read_chat_template(recipe.model.chat_template, "model.chat_template") if recipe.model.chat_template else None
    tokenizer = load_tokenizer(recipe.model.name, template)
    example = tokenize_example(tokenizer, with_system(mix[0], recipe.data.system_prompt), recipe.train.max_length)
    if example is None:
        console.print("the first training example is cut before its answer by train.max_length")
        return
    masked, learned = masked_parts(tokenizer, example)
    console.rule("one training example; the part masked from the loss is between <<< and >>>")
    console.print(Text.assemble(("<<<", "bold"), (masked, "dim"), (">>>", "bold"), (learned, "green")))


def run_finetune(recipe: Recipe, *, dry_run: bool = False, resume: bool = True, console: Console) -> dict | None:
    """Fine-tune with a validated recipe (`load_recipe`) and write the outputs; the summary dict (None for a dry
    run, and on every rank but 0). Every data file is read before a model loads."""
    defense = build_defense(recipe)
    mix, n_harmful, n_extra = build_examples(recipe.data, recipe.train.seed, defense)
    harm, safe = build_references(recipe.measure, recipe.train.seed)
    probe, dropped = probe_prompts(recipe.monitor, [mix, harm.samples, safe.samples]) if recipe.monitor.every_steps else ([], 0)
    out = Path(recipe.output.dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output.dir {out}: is a file, expected a folder")
    device = local_device()
    args = build_training_args(recipe.train, out, device, recipe.model.dtype, recipe.trainer)  # [trainer] on this machine
    if dry_run:
        console.print(dump_recipe(recipe), markup=False, highlight=False)
        table = mix_table(recipe, defense, recipe.data.num_samples, n_harmful, build_post(recipe))
        if probe:
            table.add_row("probe", str(len(probe)), f"every {recipe.monitor.every_steps} steps: {recipe.monitor.prompts} "
                          f"({dropped} dropped as seen in training or references), keyword judge")
        console.print(table)
        show_example(recipe, mix, console)
        return None

    check_fsdp(recipe)
    with writing(out, lambda: f"{kept_checkpoint(out / 'checkpoints')} (a rerun resumes from it)"):
        with console.status(f"loading {recipe.model.name}"):
            model, tokenizer = build_model(recipe.model, recipe.quantization, recipe.lora, recipe.train, device)

        def encode(chats):  # the fine-tuning mix and a defense's own data are tokenized alike
            return build_dataset(tokenizer, chats, recipe.data.system_prompt, recipe.train.max_length)

        context = DefenseContext(model, tokenizer, recipe.train.seed, recipe.train.max_length, encode, (harm, safe),
                                 mixed=n_extra)
        trainer = build_trainer(model, tokenizer, encode(mix), defense, context, recipe, args=args, probe=probe,
                                console=console)
        with FolderLock(out, "output.dir") if is_main() else contextlib.nullcontext():
            return _run(trainer, tokenizer, recipe, context.references, n_harmful=n_harmful, probe=probe,
                        device=device, resume=resume, console=console)


def _run(trainer, tokenizer, recipe: Recipe, references: tuple[RefSet, RefSet], *, n_harmful: int, probe: list[str],
         device: torch.device, resume: bool, console: Console) -> dict | None:
    """Train and write every output into output.dir (its lock held by rank 0). Rank 0 prepares the folder,
    measures and writes; other ranks train beside it and return None."""
    out, main = Path(recipe.output.dir), is_main()
    model, defense, (harm, safe) = trainer.model, trainer.defense, references
    if main:
        resume_from = prepare_output(out, resume)
        atomic_write_text(out / "recipe.resolved.toml", dump_recipe(recipe))
        before = measure_record(model, tokenizer, recipe, harm, safe, device, console)
        if before is not None:
            write_json(out / "sink_before.json", before)
    barrier()  # the folder is ready: every rank finds the same checkpoint to resume from
    if not main:
        checkpoints = out / "checkpoints"
        resume_from = last_checkpoint(checkpoints) if resume and checkpoints.is_dir() else None
    start = time.time()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.time() - start
    held = held_bytes(model, trainer.optimizer)  # before a forward leaves FSDP's root weights gathered
    sharded = fsdp_enabled(trainer)  # every rank gathers the weights and runs the measurement's forwards
    if not main and not sharded:
        barrier()
        return None
    weights = trainer.accelerator.get_state_dict(model) if sharded else None
    after = measure_record(model, tokenizer, recipe, harm, safe, device, console if main else Console(quiet=True))
    if not main:
        barrier()
        return None
    post = repair_trained(recipe, model, tokenizer, weights) if recipe.defense.post else None
    if post is not None:
        after = measure_record(model, tokenizer, recipe, harm, safe, device, console)  # the model as repaired
    trained = save_trained(model, tokenizer, out, recipe.lora.enabled, weights)
    if after is not None:
        write_json(out / "sink_after.json", {**after, "adapter": str(trained)})
    records = read_metrics(out / "metrics.jsonl")
    if records:
        panels = [(("loss", "sft_loss"), "loss", None)]
        panels += [((m.key,), m.axis or m.key, m.limits) for m in metrics_of(defense, probe)]
        write_training_plot(out / "training.png", records, f"{Path(recipe.model.name).name}: {defense.label()}", panels)
    summary = run_summary(trainer, wall, records, defense, resume_from=resume_from, samples=len(trainer.train_dataset),
                          n_harmful=n_harmful, device=device, before=before, after=after, held=held)
    summary["post"] = post
    write_json(out / "summary.json", summary)
    barrier()
    return summary
