"""accelerate's process state: the internal behind FSDP2 on CPU under torchrun."""

from __future__ import annotations

from .internal import Internal


def _partial_state():
    from accelerate import PartialState

    return PartialState


INTERNALS = (
    Internal("accelerate", "accelerate.PartialState._shared_state", "a later AcceleratorState copies its distributed "
             "type from here, so FSDP2 switched on by hand must be written here too", _partial_state, "_shared_state"),
)


def switch_to_fsdp(accelerator, plugin_args: dict) -> None:
    """Set the accelerator's state to FSDP with `plugin_args`, as accelerate does on a GPU (its own selection
    upgrades MULTI_GPU to FSDP when a plugin is given, but not MULTI_CPU: accelerate/state.py)."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    state.distributed_type, state.fsdp_plugin = DistributedType.FSDP, FullyShardedDataParallelPlugin(**plugin_args)
    # as accelerate does at the end of AcceleratorState.__init__: a later AcceleratorState() copies it from here
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
