"""`surgery eval [ADAPTER ...]`: what is evaluated: one run per adapter (on the base its fine-tuning recorded,
or `--base`), and the base model itself when asked; each checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..adapters import adapter_base, adapter_dir, full_model_dir, trained_record
from ..errors import InputError
from ..models import adapter_misfit, check_architecture, saved_chat_template


@dataclass
class Run:
    adapter: str | None  # as given on the command line; None evaluates the base model
    base: str  # the model loaded for this run
    system_prompt: str
    origin: str = ""  # the model the run was trained from (`--include-base` evaluates it); default: base
    attach: bool = True  # attach `adapter` to `base` (False: a full fine-tuning output, base is its model/)
    chat_template: str | None = None  # replaces the base tokenizer's for this run (None: the tokenizer's own)
    recorded_base: str | None = None  # the base the adapter's run recorded, where `base` is another one


def trained_template(adapter: str) -> str | None:
    """The chat template a `surgery finetune` output trained with (its tokenizer/ folder), if it has one."""
    folder = adapter_dir(adapter)
    for candidate in (folder.parent, folder):
        if (candidate / "tokenizer").is_dir():
            return saved_chat_template(candidate / "tokenizer")
    return None


def resolve_runs(adapters: list[str], base: str | None, include_base: bool, system_prompt: str | None,
                 chat_template: str | None = None) -> list[Run]:
    """One Run per adapter, and the base model first when asked (or when no adapter is given).

    A base run uses the system prompt of the first adapter on that base, so both see the same prompts.
    `chat_template` (text) replaces every run's template; without it an adapter run uses the template its
    fine-tuning used (a full fine-tuning output's model/ holds its own).
    """
    if not adapters and base is None:
        raise InputError("nothing to evaluate: give an ADAPTER folder, or --base MODEL for the base model alone")
    runs = []
    for adapter in adapters:
        if (full := full_model_dir(adapter)) is not None:  # full fine-tuning: its model/ is the run's model
            origin, trained_prompt = trained_record(Path(adapter)) or (str(full), "")
            runs.append(Run(adapter, str(full), trained_prompt if system_prompt is None else system_prompt,
                            origin=base or origin, attach=False, chat_template=chat_template))
            continue
        trained_base, trained_prompt = adapter_base(adapter)  # InputError when it holds no adapter
        model = base or trained_base
        if not model:
            raise InputError(f"{adapter}: the adapter does not name its base model; pass --base MODEL")
        runs.append(Run(adapter, model, trained_prompt if system_prompt is None else system_prompt, origin=model,
                        chat_template=chat_template or trained_template(adapter),
                        recorded_base=trained_base if trained_base and not same_model(trained_base, model) else None))
    if include_base or not adapters:
        bases: dict[str, str] = {}
        for r in runs:
            bases.setdefault(r.origin, r.system_prompt)
        runs = [Run(None, m, p, chat_template=chat_template)
                for m, p in (bases or {base: system_prompt or ""}).items()] + runs
    for model in dict.fromkeys(r.base for r in runs):
        check_architecture(model)
    for r in runs:
        if r.adapter is not None and r.attach and (why := adapter_misfit(adapter_dir(r.adapter), r.base)):
            raise InputError(f"{r.adapter}: does not fit the base model {r.base} ({why})")
    return runs


def same_model(a: str, b: str) -> bool:
    """Whether two model arguments name the same model (the same folder or file, or the same name)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.resolve() == pb.resolve() if pa.exists() and pb.exists() else a == b
