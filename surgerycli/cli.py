"""`surgery`: the command-line entry point. Each command lives in `commands/` (a thin typer function with
heavy imports inside, over the library below it); this module registers them and, for the command line
alone, quiets the notices of the libraries underneath (`commands/quiet.py`: the library itself changes no
warning or logging setting of the process that imports it)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .commands.data import data_app
from .commands.demo import demo
from .commands.eval import eval_
from .commands.finetune import finetune
from .commands.inspect import inspect
from .commands.judge import judge
from .commands.merge import merge
from .commands.quiet import quiet_libraries
from .commands.recipe import recipe
from .commands.report import report
from .commands.search import search
from .commands.sweep import sweep

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich")


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
