"""Every internal of an upstream library this project relies on, in one adapter module per library.

A name that starts with an underscore, or one no documentation promises (an attribute a class sets in its
`__init__`, a module path under `integrations`), may change in any release without a deprecation. The code
reaches such a name only through these modules:

  upstream.hf_trainer        transformers' Trainer and TRL's SFTTrainer (`with_defense`, `surgery finetune`)
  upstream.hf_modeling       transformers' models and attention functions (the sink patch, GGUF loading)
  upstream.hf_cache          transformers' KV cache and torch's compiler (`surgery eval`'s continuous batching)
  upstream.accelerate_state  accelerate's process state (FSDP2 on CPU under torchrun)

Each module lists what it uses in `INTERNALS`, with what it is needed for and how to check that it is still
there (`Internal.check`); tests/test_upstream.py runs one check per name, so an upgrade that renames or
re-signs one fails there with the name, not deep inside a run. docs/api.md lists the same names.
"""

from __future__ import annotations

from . import accelerate_state, hf_cache, hf_modeling, hf_trainer
from .internal import Internal


def internals() -> list[Internal]:
    """Every upstream internal the project uses, by library."""
    return [*hf_trainer.INTERNALS, *hf_modeling.INTERNALS, *hf_cache.INTERNALS, *accelerate_state.INTERNALS]


def markdown() -> str:
    """The table of docs/api.md: every internal, its library and what it is needed for."""
    rows = [f"| `{i.name}` | {i.library} | {i.purpose} |" for i in internals()]
    return "\n".join(["| internal | library | needed for |", "|---|---|---|", *rows]) + "\n"
