"""surgery: sink divergence and the Surgery defense against harmful fine-tuning of chat models."""

import logging
import warnings

__version__ = "0.1.0"


class _NotThisNotice(logging.Filter):
    """Drops one known, harmless notice by its text; every other record of the logger passes."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


# bitsandbytes' CPU backend looks for an optional `kernels` package and says so on every import; it runs
# without it. peft warns when a GGUF base (the embedded SmolLM2) has no config.json beside it to compare
# vocabularies against; the vocabulary is never changed here.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NotThisNotice("from kernels-community"))
warnings.filterwarnings("ignore", message=r"Could not find a config file in .* will assume that the vocabulary")


# The Python API, imported on first use so that `surgery --help` stays quick: `with_defense(TrainerClass)`,
# every registered defense by its class name (`Surgery`, `SFT`, `SafeInstr`, `Lisa`, `Vaccine`, `Booster`),
# and what a new defense is built from.
_API = {"with_defense": "train.hosting", "DefenseMixin": "train.hosting", "Defense": "train.defenses",
        "DefenseContext": "train.defenses", "register_defense": "train.defenses", "registry": "train.defenses",
        "Metric": "train.step", "Step": "train.step"}


def _defense_classes() -> dict:
    from .train.defenses import registry

    return {cls.__name__: cls for cls in registry().values()}


def __getattr__(name: str):
    import importlib

    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    classes = _defense_classes()
    if name in classes:
        return classes[name]
    raise AttributeError(f"module 'surgerycli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_defense_classes()])
