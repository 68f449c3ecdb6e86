"""`surgery recipe [RECIPE] [--set KEY=VALUE] [--reference] [--defenses]`: a recipe resolved, or the reference.

`surgery recipe RECIPE` validates the recipe as `surgery finetune` would (every problem at once, exit code 2)
and prints it resolved: every default and `auto` filled in, as TOML that `finetune` reads back.
`surgery recipe --reference` prints docs/recipe.md, generated from the typed sections (`train.reference`);
`--defenses` the registry's table in docs/defenses.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import Sets, fail


def recipe(
    path: Annotated[Path | None, typer.Argument(help="TOML recipe to validate and print resolved.", show_default=False)] = None,
    set_: Sets = None,
    reference: Annotated[bool, typer.Option("--reference", help="Print the recipe reference (docs/recipe.md): every section and key with its type, default and description.")] = False,
    defenses: Annotated[bool, typer.Option("--defenses", help="Print the defenses' table of docs/defenses.md: stage, defaults, paper, authors' code.")] = False,
) -> None:
    """Print a recipe resolved (every default filled in), or with --reference every recipe key.

    Manual: docs/recipe.md (the reference), docs/finetune.md and docs/defenses.md.
    """
    from ..errors import InputError

    if reference or defenses:
        from ..train.reference import defenses_table
        from ..train.reference import reference as text

        typer.echo(text() if reference else defenses_table(), nl=False)
        return
    if path is None:
        raise fail(InputError("give a RECIPE to resolve, or --reference"))
    from ..train.recipe import dump_recipe, load_recipe

    try:
        typer.echo(dump_recipe(load_recipe(path, set_ or [])), nl=False)
    except InputError as e:
        raise fail(e) from None
