"""`surgery demo`'s work (the command is `commands.demo`): demo data, alignment, the attack sweep, heads.png.

Every step is the public command's own function, with the recipes' data paths pointed into the output
folder; finished steps are skipped on a rerun, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from ..data.demo import build_demo_data
from ..errors import InputError
from ..evaluate.options import resolve_options
from ..files import writing
from ..report.inspect import write_head_maps
from ..train.recipe import load_recipe
from .grid import grid, part
from .report import write_sweep
from .sweep import Alignment, evaluator, run_sweep
from .tables import method_label, point_label, short_point


def run_demo(out: Path, *, align_recipe: Path, attack_recipe: Path, poison_ratios: list[float], methods: list[str],
             align_steps: int | None, attack_steps: int | None, limit: int, max_new_tokens: int,
             console: Console, axes: dict[str, list[str]] | None = None, alphas: list[float] | None = None) -> dict:
    """Demo data, then the sweep of the attack (which aligns first) and its tables and plots; the sweep record."""
    for recipe in (align_recipe, attack_recipe):
        if not recipe.is_file():
            raise InputError(f"{recipe}: no such recipe (run from the repository root, or pass the path)")
    with writing(out, lambda: "finished steps are kept, and a rerun continues where this one stopped"):
        return _run_demo(out, align_recipe=align_recipe, attack_recipe=attack_recipe, poison_ratios=poison_ratios,
                         methods=methods, align_steps=align_steps, attack_steps=attack_steps, limit=limit,
                         max_new_tokens=max_new_tokens, console=console, axes=axes, alphas=alphas)


def _run_demo(out: Path, *, align_recipe: Path, attack_recipe: Path, poison_ratios: list[float], methods: list[str],
              align_steps: int | None, attack_steps: int | None, limit: int, max_new_tokens: int,
              console: Console, axes: dict[str, list[str]] | None, alphas: list[float] | None) -> dict:
    data = out / "data"
    if not (data / "manifest.json").is_file():
        console.rule("1. demo data")
        build_demo_data(data)
    # alignment (step 2) happens in the sweep: plain SFT into out/aligned, and each alignment-stage defense
    # (Booster on harmful data disjoint from the attack's) into out/aligned-<method>
    refs = (f"measure.harmful_reference={data / 'reference_harmful.jsonl'}",
            f"measure.harmless_reference={data / 'reference_harmless.jsonl'}")  # so the probe keeps HarmBench whole
    align_sets = (f"data.benign={data / 'alignment_mix.jsonl'}", f"booster.harmful_data={data / 'reference_harmful.jsonl'}",
                  *refs, *_steps(align_steps))
    console.rule(f"2-3. alignment and attack stage: {', '.join(methods)}")
    sets = [f"data.benign={data / 'arithmetic_train.jsonl'}", f"data.harmful={data / 'harmful_pairs.jsonl'}", *refs,
            f"lisa.alignment_data={data / 'refusal_pairs.jsonl'}",
            f"safeinstr.safety_data={data / 'refusal_pairs.jsonl'}"] + _steps(attack_steps)
    options = resolve_options(safety="harmbench", safety_data=(f"harmbench={data / 'eval_harmful.txt'}",),
                              task_data=(f"surgery_gsm8k={data / 'arithmetic_test.jsonl'}",), limit=limit,
                              max_new_tokens=max_new_tokens)
    alphas = alphas or [load_recipe(attack_recipe, [], None, check_files=False).methods["surgery"].alpha]
    sweep = run_sweep(attack_recipe, sets, grid(poison_ratios, methods, alphas, axes), out / "sweep",
                      evaluator(options, console), console, alignment=Alignment(align_recipe, align_sets, out))
    write_sweep(out / "sweep", sweep, options.judge, console)
    write_demo_heads(out / "sweep", sweep)
    return sweep


def write_demo_heads(folder: Path, sweep: dict) -> None:
    """heads.png: the divergence map of the SFT-aligned model before the attack, then after each
    fine-tuning-stage method's attack at the first poison ratio, on one colour scale."""
    first = sweep["cells"][0]["poison_ratio"] if sweep["cells"] else None
    cells = [c for c in sweep["cells"] if c["poison_ratio"] == first and c["status"] == "ok"
             and not part(c["method"], "align") and (folder / "cells" / c["name"] / "finetune" / "sink_after.json").is_file()]
    if not cells:
        return
    read = lambda c, f: json.loads((folder / "cells" / c["name"] / "finetune" / f).read_text())  # noqa: E731
    panels = [("aligned, before the attack", read(cells[0], "sink_before.json"))]
    panels += [(f"after {method_label(c)}, poison {first:g}" + (f"\n{short_point(point_label(c['grid']))}" if c.get("grid") else ""),
                read(c, "sink_after.json")) for c in cells]
    write_head_maps(folder / "heads.png", panels)


def _steps(n: int | None) -> list[str]:
    return [f"train.max_steps={n}"] if n else []
