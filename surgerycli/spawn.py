"""A process started with `spawn` whose setup must come before its work's imports (`surgery search --workers`):
bitsandbytes and transformers print notices when first imported, and a spawned process imports the modules
of its target's arguments as it unpickles them. This module imports nothing of the project, so the setup runs
first, then the arguments are unpickled and the work starts."""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable


def packed(target: Callable, *args) -> tuple[str, bytes]:
    """`target(*args)` as what `run_packed` takes: the target's module and name, and its arguments pickled."""
    return f"{target.__module__}:{target.__qualname__}", pickle.dumps(args)


def run_packed(setup: Callable[[], None] | None, target: str, args: bytes) -> None:
    """A spawned process's entry: `setup()`, then the target imported and called with its unpickled arguments."""
    if setup is not None:
        setup()
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(*pickle.loads(args))
