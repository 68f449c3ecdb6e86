"""What `surgery finetune` shows and logs while it trains: the Rich progress bar, metrics.jsonl, and
checkpoint discovery for --resume. The columns are the SFT loss plus the defense's registered metrics."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from transformers import TrainerCallback

from ..errors import InputError
from ..files import atomic_write_text, damaged_file
from .distributed import global_norm, world_size
from .step import Metric

BASE_METRICS = (Metric("loss", "loss"), Metric("sft_loss", "sft"))


def metric_keys(metrics: tuple[Metric, ...]) -> tuple[str, ...]:
    """metrics.jsonl's value columns: the total and SFT losses, then the defense's own."""
    return tuple(m.key for m in (*BASE_METRICS, *metrics))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class RichProgressCallback(TrainerCallback):
    """One bar over optimizer steps, with the last logged losses and the defense's metrics."""

    def __init__(self, console: Console, metrics: tuple[Metric, ...] = ()):
        self.console = console
        self.metrics = (*BASE_METRICS, *metrics)
        self.progress: Progress | None = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        fields = "  ".join(f"{m.label} {{task.fields[{m.key}]}}" for m in self.metrics)
        self.progress = Progress(
            TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn(fields),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, **{m.key: "-" for m in self.metrics})

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.progress.update(self.task, **{m.key: _fmt(logs.get(m.key), m.fmt) for m in self.metrics})

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()


class MetricsCallback(TrainerCallback):
    """Appends one JSON object per logging step to metrics.jsonl."""

    def __init__(self, path: Path, metrics: tuple[Metric, ...] = ()):
        self.path = path
        self.keys = metric_keys(metrics)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        record = {"step": state.global_step, **{k: logs.get(k) for k in self.keys},
                  "lr": logs.get("learning_rate")}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """The records of metrics.jsonl; a line cut short by a kill is dropped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the records up to `last_step`: a resumed run logs the later steps again."""
    kept = [r for r in read_metrics(path) if r["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete `checkpoint-N` in `folder`; incomplete ones (killed mid-save) and damaged ones (a
    truncated weights or optimizer file) are removed, with a line saying so.

    The Trainer writes trainer_state.json last, so a checkpoint holding a readable one was written whole.
    """
    def step(p: Path) -> int:
        tail = p.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    found = sorted(folder.glob("checkpoint-*"), key=step)
    complete = None
    for ckpt in found:
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            shutil.rmtree(ckpt, ignore_errors=True)  # killed mid-save: never whole
            continue
        damage = next(((f, why) for f in sorted(ckpt.iterdir()) if (why := damaged_file(f))), None)
        if damage:
            print(f"{ckpt}: {damage[0].name} is damaged ({damage[1]}); removed, resuming from the checkpoint before")
            shutil.rmtree(ckpt, ignore_errors=True)
        else:
            complete = ckpt
    return complete


def kept_checkpoint(folder: Path) -> str:
    """What a stopped run keeps, in words: its newest complete checkpoint in `folder`, which a rerun resumes
    from (read only: nothing is removed here)."""
    def complete(p: Path) -> bool:
        try:
            json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
            return p.name.rsplit("-", 1)[-1].isdigit()
        except (OSError, ValueError):
            return False

    done = sorted((p for p in Path(folder).glob("checkpoint-*") if complete(p)), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    return f"the last checkpoint, {done[-1].name}, is kept" if done else "no checkpoint was written yet"


class FiniteGuard(TrainerCallback):
    """Stops the run before an optimizer step would apply a non-finite loss or gradient, with one line naming
    the step and the value; the checkpoints written so far stay (`--resume` continues from the last one).
    Every rank decides alike: the gradient norm is taken over every rank's shards under FSDP2, and a
    non-finite loss on one rank is all-reduced to the others, so no rank stops while another waits."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        grads = [p.grad.detach() for p in self.trainer.model.parameters() if p.grad is not None]
        norm = float(global_norm(grads)) if grads else 0.0
        loss = self.trainer.last_loss
        finite = torch.tensor(float(math.isfinite(loss)))
        if world_size() > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if math.isfinite(norm) and bool(finite):
            return
        raise InputError(f"step {state.global_step + 1}: the loss is {loss:g} and the gradient norm {norm:g}: not "
                         f"finite, so the run stopped before the weights took it ({kept_checkpoint(args.output_dir)}); "
                         f"lower the learning rate or the defense's weight")
