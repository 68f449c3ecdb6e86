"""surgery: sink divergence and the Surgery defense against harmful fine-tuning of chat models."""

__version__ = "0.1.0"


# The Python API, imported on first use so that `surgery --help` stays quick: `with_defense(TrainerClass)`,
# every registered defense by its class name (`Surgery`, `SFT`, `SafeInstr`, `Lisa`, `Vaccine`, `Booster`,
# `Antidote`, `SafeLoRA`),
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
