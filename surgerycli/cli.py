"""`surgery`: the command-line entry point. Each command lives in `commands/` (a thin typer function with
heavy imports inside, over the library below it); this module registers them and, for the command line
alone, quiets the notices of the libraries underneath (the library itself changes no warning or logging
setting of the process that imports it)."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Annotated

import typer

from .commands.data import data_app
from .commands.demo import demo
from .commands.eval import eval_
from .commands.finetune import finetune
from .commands.inspect import inspect
from .commands.judge import judge
from .commands.merge import merge
from .commands.recipe import recipe
from .commands.report import report
from .commands.search import search
from .commands.sweep import sweep

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich")


class _NotThisNotice(logging.Filter):
    """Drops one known, harmless notice by its text; every other record of the logger passes."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_libraries() -> None:
    """What a command's output need not show: known notices of the libraries underneath, each harmless here.

    bitsandbytes' CPU backend looks for an optional `kernels` package and says so on every import; it runs
    without it. peft warns when a GGUF base (the embedded SmolLM2) has no config.json beside it to compare
    vocabularies against; the vocabulary is never changed here. peft still reads transformers' renamed
    gradient-checkpointing aliases (a FutureWarning about names, not behaviour). transformers', lm-eval's and
    Optuna's info and warning lines would interleave with the progress bars (Optuna also marks the heartbeat's
    retry helpers experimental, though their behaviour is what the search relies on and tests).
    """
    from transformers.utils import logging as hf_logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NotThisNotice("from kernels-community"))
    warnings.filterwarnings("ignore", message=r"Could not find a config file in .* will assume that the vocabulary")
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.WARNING)  # a line per trial: `surgery search` prints its own
    warnings.filterwarnings("ignore", message=r".* is experimental \(supported from")  # Optuna's, on stable calls
    hf_logging.set_verbosity_error()


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"surgery {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Sink divergence and the Surgery defense against harmful fine-tuning of chat models.

    Manual: README.md and docs/ (a page per command; docs/recipe.md lists every recipe key).
    """
    quiet_libraries()


app.command()(inspect)
app.command()(finetune)
app.command(name="eval")(eval_)
app.command()(judge)
app.command()(merge)
app.command()(recipe)
app.command()(sweep)
app.command()(search)
app.command()(report)
app.command(name="demo")(demo)
app.add_typer(data_app, name="data")

if __name__ == "__main__":
    sys.exit(app())
