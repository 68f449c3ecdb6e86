"""`surgery sweep RECIPE --out DIR`: the command; the work is `study.grid`, `study.sweep` and `study.report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..evaluate.options import EvalOptions
from .options import Sets, fail, interrupted, with_eval_options


@with_eval_options
def sweep(
    recipe: Annotated[Path, typer.Argument(help="TOML recipe for every cell (surgery finetune's format).")],
    out: Annotated[Path, typer.Option(help="Sweep folder: cells/<name>/{finetune,eval,cell.json}, sweep.json, sweep.md, sweep.png.")],
    poison_ratios: Annotated[str, typer.Option(help="Comma-separated poison ratios.")] = "0,0.05,0.1,0.15,0.2",
    methods: Annotated[str, typer.Option(help="Comma-separated registered defenses (sft, surgery, safeinstr, lisa, vaccine, booster, antidote, safelora), or chains of them joined by + (one per stage: alignment, fine-tuning, post-fine-tuning; e.g. booster+lisa+antidote), or `all`.")] = "sft,surgery",
    alphas: Annotated[str | None, typer.Option(help="Comma-separated Surgery alphas (one cell each); default: the recipe's.")] = None,
    grid: Annotated[list[str] | None, typer.Option(help="KEY=V1,V2,...: any recipe key over these values, crossed with the rest (repeatable), e.g. train.learning_rate=1e-4,2e-4,5e-4; cells are named by their values. A key of a fine-tuning-stage defense's own section multiplies that defense's cells only: its main hyperparameter is surgery.alpha (= --alphas), lisa.rho, safeinstr.num (alignment-stage options go to --align-set).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated train.seed values (data mix, LoRA init, reference draws), one cell each; tables show the mean, standard deviation and pooled 95% interval over seeds. Default: the recipe's seed.")] = None,
    set_: Sets = None,
    align_recipe: Annotated[Path | None, typer.Option(help="Alignment-stage recipe: fine-tuning-stage methods attack the model it aligns with plain SFT; each alignment-stage method (vaccine, booster) aligns its own model with it, once for every poison ratio, and is then attacked with plain SFT. Without it the recipe's model is the aligned model.")] = None,
    align_set: Annotated[list[str] | None, typer.Option(help="Override a key of the alignment recipe (repeatable).")] = None,
    accelerate_config: Annotated[Path | None, typer.Option(help="Launch each cell's fine-tuning with `accelerate launch --config_file FILE` (e.g. recipes/accelerate/ddp.yaml: DDP over the machine's GPUs); evaluation stays in this process. Default: in this process.")] = None,
    *,
    options: EvalOptions,
) -> None:
    """Run the poison-ratio x method grid (x --grid values x --seeds): a finetune and an eval per cell, resumable, tables at the end.

    HS is the first safety benchmark's harmful score and FA the first task's accuracy (%); the base model is evaluated once as the row before the attack. Finished cells are skipped on a rerun; a failed cell is recorded with its error and the sweep goes on.

    Manual: docs/sweeps.md and docs/study.md.
    """
    from rich.console import Console

    from ..errors import InputError
    from ..files import FolderLock, writing
    from ..study.report import write_sweep
    from ..study.grid import plan
    from ..study.sweep import Alignment, evaluator, run_sweep

    console = Console()
    try:
        cells = plan(recipe, set_ or [], poison_ratios, methods, alphas, align_recipe, grid, seeds)
        alignment = Alignment(align_recipe, tuple(align_set or ()), out) if align_recipe else None
        if accelerate_config is not None and not accelerate_config.is_file():
            raise InputError(f"--accelerate-config {accelerate_config}: no such file")
        kept = lambda: "finished cells are kept, and a half-trained one resumes from its last checkpoint"  # noqa: E731
        with writing(out, kept), FolderLock(out, "--out"):
            sweep_result = run_sweep(recipe, set_ or [], cells, out, evaluator(options, console), console,
                                     alignment=alignment, launch=accelerate_config)
            write_sweep(out, sweep_result, options.judge, console)
    except InputError as e:
        raise fail(e) from None
    except KeyboardInterrupt:
        raise interrupted("finished cells are kept and a half-trained one resumes from its checkpoint; run the "
                          "same command again to continue") from None
