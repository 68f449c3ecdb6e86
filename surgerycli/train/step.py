"""The Defense–Trainer interface: what a defense's `training_step` may use of the trainer that hosts it.

A defense never sees the Trainer. Each micro-step it gets a `Step`: the host's own SFT forward and backward
(`sft`), a way to back-propagate an extra term (`backward`, inside the host's forward `context()`), a way to
move a batch of its own to the device (`prepare`), a metric sink (`record`), and the numbers that make its
draws and scales exact: which micro-step of the run this is, how many micro-batches the optimizer step
accumulates, the per-process batch size and the seed. `train.hosting` implements it over any
`transformers.Trainer` (TRL's `SFTTrainer` included); a custom loop can implement it in a few lines.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Step(Protocol):
    """One micro-step of the host's training, as a defense sees it."""

    inputs: dict  # the host's micro-batch as its collator made it
    micro_step: int  # this micro-batch's index over the whole run (the same after a resume)
    global_step: int  # optimizer steps done before this one
    max_steps: int  # optimizer steps of the whole run
    accumulation: int  # micro-batches in this optimizer step: extra terms are scaled by 1 / accumulation
    batch_size: int  # rows of a micro-batch on this process
    seed: int

    def sft(self, inputs: dict | None = None) -> torch.Tensor:
        """The host's own SFT forward and backward on `inputs` (default: the host's batch); the loss."""

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate an extra term, already scaled for accumulation, as the host back-propagates its loss."""

    def context(self) -> AbstractContextManager:
        """The host's forward context (autocast, activation offloading): open it around extra forwards."""

    def prepare(self, batch: dict) -> dict:
        """A batch of the defense's own on the model's device."""

    def record(self, key: str, value: float) -> None:
        """Log `value` under one of the defense's metric keys, averaged over the host's logging interval."""

    def count_tokens(self, kind: str, n: int) -> None:
        """Count `n` tokens of an extra pass (`reference`: Surgery's reference batch) in the run's totals."""


@dataclass(frozen=True)
class Metric:
    """A value a defense logs each step: its key (log_history, metrics.jsonl, summary.json), label and format."""

    key: str
    label: str  # progress-bar label
    fmt: str = ".4f"
    axis: str = ""  # training.png's axis label (default: the key)
    limits: tuple[float, float] | None = None  # training.png's axis range (default: the data's)
