"""`surgery demo`: the whole Surgery story on the packaged SmolLM2, offline, on CPU (the README's first command);
the command. The work is `study.demo.run_demo`:

  1. `surgery data demo`: arithmetic, harmful and refusal pairs, reference sets, held-out HarmBench prompts
  2. alignment: `surgery finetune recipes/demo-align.toml` (refusals + arithmetic), then `surgery merge`;
     with alignment-stage defenses (vaccine, booster) each aligns its own model the same way
  3. attack: `surgery sweep recipes/demo-attack.toml` at the poison ratios and `--grid` values, with
     each method (default SFT and Surgery); each cell is evaluated on the held-out HarmBench prompts
     (keyword judge) and the arithmetic test split. The default attacks are the study's (docs/study.md):
     poison 0.1 at lr 2e-4, where Surgery with alpha 3000 held, and at lr 5e-4, where it failed
Every step is the public command's own function, with the recipes' data paths pointed into --out.
Finished steps are skipped on a rerun, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import fail

# the study's attacks (docs/study.md): Surgery held at lr 2e-4 with alpha 3000 and failed at 5e-4;
# alpha 300, the paper's (set for full fine-tuning at lr 5e-6), held only at 1e-4
DEMO_RATIOS = "0.1"
DEMO_GRID = ["train.learning_rate=2e-4,5e-4"]
DEMO_ALPHAS = "3000"


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything: data/, align/, aligned/, sweep/.")] = Path("demo-out"),
    poison_ratios: Annotated[str, typer.Option(help="Comma-separated poison ratios of the attack.")] = DEMO_RATIOS,
    methods: Annotated[str, typer.Option(help="Defenses to compare: sft,surgery (default), any registered names, or `all` (sft, surgery, safeinstr, lisa, vaccine, booster).")] = "sft,surgery",
    grid: Annotated[list[str] | None, typer.Option(help=f"KEY=V1,V2,...: attack recipe keys crossed with the rest, as `surgery sweep --grid` (repeatable); replaces the default `{DEMO_GRID[0]}`: one attack Surgery withstands on this model and one it does not (docs/study.md).")] = None,
    alphas: Annotated[str, typer.Option(help="Comma-separated Surgery alphas (one cell each); the paper's is 300, which held on this model only at lr 1e-4.")] = DEMO_ALPHAS,
    align_steps: Annotated[int | None, typer.Option(min=1, help="Cap on alignment steps (default: the recipe's one epoch).")] = None,
    attack_steps: Annotated[int | None, typer.Option(min=1, help="Cap on attack steps per cell (default: the recipe's one epoch).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Held-out HarmBench prompts and arithmetic test problems evaluated.")] = 40,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated per answer.")] = 48,
    align_recipe: Annotated[Path, typer.Option(help="Alignment-stage recipe.")] = Path("recipes/demo-align.toml"),
    attack_recipe: Annotated[Path, typer.Option(help="Attack-stage recipe.")] = Path("recipes/demo-attack.toml"),
) -> None:
    """The whole story on the packaged SmolLM2, offline, on CPU: demo data, alignment (finetune + merge), then the harmful fine-tuning attack as SFT and with Surgery (or the defenses --methods names), each evaluated for harmful score and accuracy. By default the attack runs at poison 0.1 at two strengths, lr 2e-4 (where Surgery with alpha 3000 held in the study) and 5e-4 (where it failed).

    Reruns skip finished steps. The table at the end is sweep/sweep.md (plots: sweep/sweep.png, and sweep/heads.png, the per-head sink divergence before and after each attack); each cell's outputs are in sweep/cells/.

    Manual: docs/demo.md.
    """
    from rich.console import Console

    from ..errors import InputError
    from ..study.demo import run_demo
    from ..study.grid import parse_floats, parse_grid, parse_methods

    try:
        run_demo(out, align_recipe=align_recipe, attack_recipe=attack_recipe,
                 poison_ratios=parse_floats(poison_ratios, "--poison-ratios", 0.0, 1.0),
                 methods=parse_methods(methods), axes=parse_grid(DEMO_GRID if grid is None else grid),
                 alphas=parse_floats(alphas, "--alphas"), align_steps=align_steps,
                 attack_steps=attack_steps, limit=limit, max_new_tokens=max_new_tokens, console=Console())
    except InputError as e:
        raise fail(e) from None
