"""`surgery finetune RECIPE.toml`: the command; the work is `train.finetune.run_finetune`."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import Recipe, Sets, fail, interrupted


def finetune(
    recipe: Recipe,
    set_: Sets = None,
    output: Annotated[str | None, typer.Option(help="Output folder; overrides output.dir.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate, print the resolved recipe and the data mix, and stop.")] = False,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last complete checkpoint in the output folder, or start over.")] = True,
) -> None:
    """LoRA / QLoRA (or full, lora.enabled = false) fine-tuning with a harmful-fine-tuning defense from the registry (recipe key `defense.method`).

    Several processes: `accelerate launch [--config_file recipes/accelerate/ddp.yaml] -m surgerycli finetune RECIPE.toml` or `torchrun --nproc-per-node N -m surgerycli finetune RECIPE.toml` (DDP); sharded with FSDP2: `--config_file recipes/accelerate/fsdp.yaml`, or recipe key `trainer.fsdp = "full_shard"` under torchrun (CPU too); rank 0 writes everything.

    `surgery` (default): loss = SFT loss + surgery.alpha * mean over all heads of relu(d_h), with d_h measured each step on fresh harmful and harmless reference samples in one batched forward through the sink patch. `sft`: no defense, the baseline. Writes adapter/, tokenizer/, recipe.resolved.toml, metrics.jsonl, sink_before.json, sink_after.json (as the recipe's measure section says), training.png and summary.json to the output folder.

    The same defenses run inside your own Trainer (TRL's SFTTrainer, a plain Trainer): `from surgerycli import Surgery, with_defense` (docs/api.md).

    Manual: docs/finetune.md and docs/recipe.md (every recipe key).
    """
    from rich.console import Console

    from ..errors import InputError
    from ..train.distributed import is_main
    from ..train.finetune import run_finetune
    from ..train.recipe import load_recipe

    console = Console(quiet=not is_main())  # under a launcher, rank 0 alone speaks
    try:
        summary = run_finetune(load_recipe(recipe, set_ or [], output), dry_run=dry_run, resume=resume, console=console)
    except InputError as e:
        raise fail(e) from None
    except KeyboardInterrupt:
        raise interrupted("the output folder keeps its last complete checkpoint; run the same command again to "
                          "resume from it (--no-resume starts over)") from None
    if summary is not None:
        console.print(
            f"{summary['label']}: {summary['steps']} steps in {summary['wall_time_s']:.0f} s, "
            f"positive heads {summary['positive_heads_before']} -> {summary['positive_heads_after']}"
        )
