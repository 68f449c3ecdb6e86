"""`surgery finetune` under `accelerate launch` or `torchrun`: ranks, the output folder's owner, and the one
gradient all-reduce per optimizer step.

The Trainer (through accelerate) starts the process group and wraps the model in DistributedDataParallel.
DDP all-reduces during every backward of its own forward; a defense's extra passes (Surgery's sink
forward through the decoder, the alignment-stage defenses' second pass, the chunked SFT loss) call
submodules or run more than one backward, so that hook would either miss them or fire twice. Instead,
under DDP every micro-step runs inside `no_sync()` and `sync_gradients` all-reduces the accumulated
gradients once, when the optimizer is about to step: the mean over ranks of (SFT + every extra term),
exactly what one process with the whole batch computes.

Under FSDP2 (`[trainer] fsdp = "full_shard"`, or accelerate's FSDP config) every parameter is a DTensor shard
and FSDP reduce-scatters gradients itself in every backward, each backward's mean over ranks: a sum of
backwards stays the mean of the sums, so the defense's extra passes need no hook of ours, only to run through
the root module (where FSDP all-gathers the root's own parameters). What needs the whole model (saving, the
sink measurement after training, the probe) runs on every rank, and rank 0 writes.

Rank 0 (the main process) alone prepares the output folder, holds its lock, measures sink_before, shows the
progress bar and writes every file; the other ranks wait at `barrier()` where rank 0 writes what they then
read.
"""

from __future__ import annotations

import os

import torch

from ..upstream.accelerate_state import switch_to_fsdp


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


def is_sharded(model) -> bool:
    """The model is an FSDP2 module (`fully_shard`): its parameters are DTensor shards."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: a DTensor's local shard (what a checkpoint loads with weights_only),
    else the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of every tensor together, where FSDP2's DTensors hold disjoint shards: each rank's sum of
    squares, summed over ranks (a DTensor's own norm would be its shard's)."""
    squares = torch.stack([local_shard(t).float().pow(2).sum() for t in tensors]).sum()
    if any(hasattr(t, "to_local") for t in tensors):
        torch.distributed.all_reduce(squares)
    return squares.sqrt()


def held_bytes(model: torch.nn.Module, optimizer) -> int:
    """Bytes of weights and optimizer states this rank holds after training (its shards under FSDP2): what
    sharding divides by the number of processes (with the gradients, gone once the optimizer steps), unlike
    the activations and the process's own overhead."""
    tensors = list(model.parameters())
    if optimizer is not None:
        tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(local_shard(t).numel() * t.element_size() for t in tensors)


def shard_on_cpu(accelerator, fsdp_plugin_args: dict | None) -> bool:
    """Let a CPU run under torchrun (gloo) use FSDP2 as a GPU run does; True when it switched.

    accelerate's state selection upgrades MULTI_GPU (and the other accelerators) to FSDP when an FSDP plugin
    is given, but not MULTI_CPU: the Trainer then trains DDP and nothing says the `fsdp` setting was dropped.
    `fully_shard` itself runs on CPU with gloo, and with the state set as accelerate sets it on a GPU,
    `prepare` shards the model (FSDP<Model>, DTensor parameters) and `get_state_dict` gathers it. Called right
    after the Trainer creates its Accelerator, before anything is prepared; the one place this project works
    around the gate (`upstream.accelerate_state`).
    """
    from accelerate.utils import DistributedType

    if fsdp_plugin_args is None or accelerator.state.distributed_type != DistributedType.MULTI_CPU:
        return False
    switch_to_fsdp(accelerator, fsdp_plugin_args)
    return True


def strategy(accelerator) -> str:
    """How the run spreads over processes, as summary.json records it: none, ddp, fsdp2."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return f"fsdp{accelerator.state.fsdp_plugin.fsdp_version}"
    return "none" if kind == DistributedType.NO else "ddp"


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
