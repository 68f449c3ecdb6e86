"""`surgery finetune` under `accelerate launch` or `torchrun`: ranks, the output folder's owner, and the one
gradient all-reduce per optimizer step.

The Trainer (through accelerate) starts the process group and wraps the model in DistributedDataParallel.
DDP all-reduces during every backward of its own forward; a defense's extra passes (Surgery's sink
forward through the decoder, the alignment-stage defenses' second pass, the chunked SFT loss) call
submodules or run more than one backward, so that hook would either miss them or fire twice. Instead,
under DDP every micro-step runs inside `no_sync()` and `sync_gradients` all-reduces the accumulated
gradients once, when the optimizer is about to step: the mean over ranks of (SFT + every extra term),
exactly what one process with the whole batch computes.

Rank 0 (the main process) alone prepares the output folder, holds its lock, measures sink_before/after,
shows the progress bar and writes every file; the other ranks wait at `barrier()` where rank 0 writes
what they then read.
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def local_device() -> torch.device:
    """This process's device: its LOCAL_RANK's GPU under a launcher, the GPU or the CPU otherwise."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def is_ddp(model) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


BUCKET = 1 << 25  # elements per all-reduce: a bounded copy (64 MiB in bf16), as DDP's own 25 MiB buckets do


def sync_gradients(model: torch.nn.Module) -> None:
    """All-reduce (mean over ranks) every trainable parameter's gradient once, in flat buckets of at most
    BUCKET elements (same dtype), so the extra memory stays bounded for a fully fine-tuned model."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # the same buffer layout on every rank, even where a parameter got no gradient here
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world = torch.distributed.get_world_size()
    bucket: list[torch.Tensor] = []
    for i, p in enumerate(params):
        bucket.append(p.grad)
        last = i == len(params) - 1
        if last or sum(g.numel() for g in bucket) + params[i + 1].numel() > BUCKET or params[i + 1].grad.dtype != p.grad.dtype:
            flat = torch.cat([g.reshape(-1) for g in bucket])
            torch.distributed.all_reduce(flat)
            flat /= world
            offset = 0
            for g in bucket:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
            bucket = []
