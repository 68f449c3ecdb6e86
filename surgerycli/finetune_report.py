"""What `surgery finetune` shows and writes: the Rich progress bar, metrics.jsonl, training.png,
checkpoint discovery for --resume, and folders saved whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from transformers import TrainerCallback

from .errors import atomic_write, atomic_write_text

METRIC_KEYS = ("loss", "sft_loss", "sink_loss", "positive_heads")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class RichProgressCallback(TrainerCallback):
    """One bar over optimizer steps, with the last logged loss terms and positive-head count."""

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        fields = ("loss {task.fields[loss]}  sft {task.fields[sft]}  sink {task.fields[sink]}  "
                  "+heads {task.fields[heads]}")
        self.progress = Progress(
            TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn(fields),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, loss="-", sft="-", sink="-", heads="-"
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.progress.update(
                self.task, loss=_fmt(logs["loss"], ".4f"), sft=_fmt(logs.get("sft_loss"), ".4f"),
                sink=_fmt(logs.get("sink_loss"), ".5f"), heads=_fmt(logs.get("positive_heads"), ".1f"),
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()


class MetricsCallback(TrainerCallback):
    """Appends one JSON object per logging step to metrics.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        record = {"step": state.global_step, **{k: logs.get(k) for k in METRIC_KEYS},
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
    """The newest complete `checkpoint-N` in `folder`; incomplete ones (killed mid-save) are removed.

    The Trainer writes trainer_state.json last, so a checkpoint holding a readable one is whole.
    """
    def step(p: Path) -> int:
        tail = p.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    found = sorted(folder.glob("checkpoint-*"), key=step)
    complete = None
    for ckpt in found:
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            complete = ckpt
        except (OSError, ValueError):
            shutil.rmtree(ckpt, ignore_errors=True)
    return complete


def save_folder(path: Path, save: Callable[[Path], None]) -> None:
    """Call `save(tmp_dir)` beside `path`, then swap it into place: never a half-written folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    old = path.parent / f".{path.name}.old"
    try:
        save(tmp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_training_plot(path: Path, records: list[dict], title: str) -> None:
    """Loss terms and positive-head count against step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (
        (axes[0], ("loss", "sft_loss"), "loss"),
        (axes[1], ("sink_loss",), "sink loss  mean relu(d_h)"),
        (axes[2], ("positive_heads",), "heads with d_h > 0 (reference batch)"),
    )
    for ax, keys, label in panels:
        for key in keys:
            pairs = [(s, r[key]) for s, r in zip(steps, records) if r.get(key) is not None]
            if pairs:
                ax.plot(*zip(*pairs), marker=".", label=key)
        if not ax.lines:
            ax.text(0.5, 0.5, "no regularizer (SFT)", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if len(keys) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
