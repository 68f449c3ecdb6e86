"""`surgery sweep RECIPE --poison-ratios ... --methods sft,surgery [--alphas ...] [--grid KEY=V1,V2] [--seeds 0,1]
--out DIR`: the paper's grid, crossed with any recipe keys and seeds.

Library code shared by the sweep and demo commands; the cells come from `study.grid`. Each cell is a `surgery finetune` of the recipe at
one poison ratio and registered defense (Surgery once per alpha), at one value of each `--grid` key and
one seed (`train.seed`: the data mix, LoRA init and reference draws), followed by a `surgery eval` of its
adapter. A cell is finished when its cell.json exists (written last),
so a rerun skips finished cells and resumes an interrupted fine-tune from its checkpoint. A cell that
fails is recorded with its error and the sweep goes on. The base model is evaluated once, as the
"before the attack" row. With an `Alignment` (`--align-recipe`) the sweep first aligns: plain SFT for
the fine-tuning-stage methods, and each alignment-stage method its own model, each merged once; each
aligned model is evaluated once before the attack. `study.report` writes sweep.json, sweep.md (both
table layouts) and sweep.png.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..evaluate.options import EvalOptions
from ..evaluate.run import run_eval
from ..errors import InputError
from ..files import atomic_write_text, write_failure
from ..models import DTYPES, merge_adapter
from ..train.finetune import run_finetune
from ..train.recipe import Recipe, load_recipe
from .grid import Cell, part
from .layout import before_file, before_folder


@dataclass(frozen=True)
class Alignment:
    """The alignment stage of a two-stage sweep: the recipe that aligns, and where aligned models go.

    Plain SFT alignment (for every fine-tuning-stage method) goes to `root/align` and is merged into
    `root/aligned`; an alignment-stage method m aligns its own model into `root/align-m`, `root/aligned-m`.
    """

    recipe: Path
    overrides: tuple[str, ...]
    root: Path

    def folders(self, method: str) -> tuple[Path, Path]:
        """(finetune output, merged model) of the alignment that `method`'s cells attack."""
        m = part(method, "align") or "sft"
        tail = "" if m == "sft" else f"-{m}"
        return self.root / f"align{tail}", self.root / f"aligned{tail}"

    def unaligned(self) -> str:
        """The model the alignment starts from (Safe LoRA's unaligned model)."""
        return load_recipe(self.recipe, list(self.overrides), None, check_files=False).model.name

    def sets(self, method: str) -> list[str]:
        return [*self.overrides, f"defense.method={part(method, 'align') or 'sft'}"]


def cell_sets(cell: Cell, overrides: list[str], alignment: Alignment | None, aligned: Path | None) -> list[str]:
    """A cell's recipe overrides: with an alignment stage, Safe LoRA's unaligned model is the alignment's own
    starting model (first, so the user's `--set safelora.unaligned_model` wins), then the user's, then the cell's."""
    first = [f"safelora.unaligned_model={alignment.unaligned()}"] if alignment and part(cell.method, "post") == "safelora" else []
    return [*first, *overrides, *cell.overrides(aligned)]


def check_post(cell: Cell, recipe: Recipe) -> None:
    """What a cell's post-fine-tuning defense needs before anything trains (Safe LoRA: the unaligned model)."""
    if part(cell.method, "post") == "safelora" and recipe.methods["safelora"].unaligned_model is None:
        raise InputError(f"--methods {cell.method}: Safe LoRA needs the model before alignment: give --align-recipe, "
                         f"or --set safelora.unaligned_model=MODEL")


def align_models(alignment: Alignment, methods: list[str], console: Console) -> dict[str, Path]:
    """method -> the aligned model its cells attack, each aligned (and merged) once; reruns skip finished ones.
    The shared aligned model is always made: it is the "before the attack" row, also of a sweep of Vaccine alone."""
    for method in dict.fromkeys(["sft", *methods]):
        run, model = alignment.folders(method)
        if not (model / "config.json").is_file():
            console.rule(f"alignment stage: {part(method, 'align') or 'SFT'} -> {model}")
            recipe = load_recipe(alignment.recipe, alignment.sets(method), str(run))
            run_finetune(recipe, resume=True, console=console)
            with console.status(f"merging {run}"):
                merge_adapter(str(run), model, None, DTYPES[recipe.model.dtype])
    return {m: alignment.folders(m)[1] for m in methods}


def evaluator(options: EvalOptions, console: Console):
    """`evaluate(adapters, out_dir, base=None) -> records`: `surgery eval` with the sweep's eval options."""
    def evaluate(adapters: list[str], out: Path, base: str | None = None) -> list[dict]:
        return run_eval(adapters, options, base=base, out=out, console=console)

    return evaluate


def headline(records: list[dict]) -> dict:
    """The first benchmark's harmful score and the first task's accuracy (%) of an eval run, with their
    95% Wilson intervals and counts (`hs_n` prompts, `fa_n` problems: what pooling over seeds needs)."""
    run = records[0]
    safety = next(iter(run["safety"].values())) if run["safety"] else {}
    task = next(iter(run["tasks"].values())) if run["tasks"] else {}
    acc, ci = task.get("acc"), task.get("acc_ci95")
    return {"harmful_score": safety.get("harmful_score"), "hs_ci95": safety.get("ci95"), "hs_n": safety.get("n"),
            "accuracy": 100 * acc if acc is not None else None,
            "fa_ci95": [100 * x for x in ci] if ci else None, "fa_n": task.get("n")}


def launched_finetune(config: Path, recipe: Path, sets: list[str], out: Path) -> dict:
    """`surgery finetune` of one cell in processes started by `accelerate launch --config_file config`; its
    summary.json. The launched run resumes from its checkpoint like an in-process one."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "surgerycli",
           "finetune", str(recipe), "--output", str(out)]
    for item in sets:
        cmd += ["--set", item]
    code = subprocess.run(cmd).returncode
    if code:
        raise RuntimeError(f"accelerate launch --config_file {config} ... finetune exited with code {code}")
    return json.loads((out / "summary.json").read_text())


def run_cell(cell: Cell, recipe: Recipe, folder: Path, evaluate, console: Console,
             launch: tuple[Path, Path, list[str]] | None = None) -> dict:
    """Fine-tune (in this process, or launched with `launch` = (accelerate config, recipe file, its overrides))
    and evaluate one cell; its record."""
    if launch is not None:
        summary = launched_finetune(launch[0], launch[1], launch[2], folder / "finetune")
    else:
        summary = run_finetune(recipe, resume=True, console=console)
    scores = headline(evaluate([str(folder / "finetune")], folder / "eval"))
    return {**cell.record(), "status": "ok", **scores,
            "positive_heads_before": summary["positive_heads_before"],
            "positive_heads_after": summary["positive_heads_after"],
            "significant_positive_heads_before": summary.get("significant_positive_heads_before"),
            "significant_positive_heads_after": summary.get("significant_positive_heads_after"), "steps": summary["steps"],
            "label": summary["label"], "final_metrics": summary["final_metrics"], "post": summary.get("post"),
            "wall_time_s": summary["wall_time_s"], "world_size": summary.get("world_size", 1)}


def finished(file: Path, keys: tuple[str, ...], console: Console) -> dict | None:
    """A finished record (a cell's cell.json with status ok, a base.json), or None when there is none or it
    cannot be trusted (truncated, corrupted, another cell's): then the work is redone, and the console says why."""
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        console.print(f"{file}: unreadable ({e}); redoing it")
        return None
    if not isinstance(record, dict) or any(k not in record for k in keys):
        console.print(f"{file}: not a finished record (expected the keys {', '.join(keys)}); redoing it")
        return None
    return record


def before_attack(model: str, out: Path, align: str | None, evaluate, console: Console) -> dict:
    """The scores of a model before the attack (the shared one, or the one the alignment-stage defense `align`
    aligned), evaluated once into `out`'s layout (the record is written last; a rerun reads it)."""
    file, folder = before_file(out, align), before_folder(out, align)
    record = finished(file, ("model", "harmful_score", "accuracy"), console)
    if record is None or record["model"] != model:
        console.rule(f"{model}: before the attack")
        record = {"model": model, **headline(evaluate([], folder, base=model))}
        atomic_write_text(file, json.dumps(record) + "\n")
    return record


def run_sweep(recipe: Path, overrides: list[str], cells: list[Cell], out: Path, evaluate, console: Console, *,
              alignment: Alignment | None = None, launch: Path | None = None) -> dict:
    """Run every unfinished cell; `evaluate(adapters, out_dir, base=None) -> records` is a configured `surgery eval`.

    Every cell's recipe is validated before anything trains. With an `alignment`, each cell attacks the model its
    method's alignment produced (aligned first, once; the cell's recipe is then loaded again with that model,
    which may change what `auto` resolves to). With `launch` (an accelerate config), each cell's fine-tuning
    runs in the processes it starts.
    """
    def cell_recipe(cell: Cell, aligned: Path | None = None) -> Recipe:
        return load_recipe(recipe, cell_sets(cell, overrides, alignment, aligned), str(out / "cells" / cell.name / "finetune"))

    recipes = {cell.name: cell_recipe(cell) for cell in cells}
    for cell in cells:
        check_post(cell, recipes[cell.name])
    methods = list(dict.fromkeys(c.method for c in cells))
    if alignment is not None:
        for m in methods:
            load_recipe(alignment.recipe, alignment.sets(m), str(alignment.folders(m)[0]))
    aligned = align_models(alignment, methods, console) if alignment is not None else None
    base_name = str(alignment.folders("sft")[1]) if alignment else next(iter(recipes.values())).model.name
    base = before_attack(base_name, out, None, evaluate, console)
    own = {m: before_attack(str(alignment.folders(m)[1]), out, m, evaluate, console)
           for m in dict.fromkeys(filter(None, (part(m, "align") for m in methods))) if aligned}
    results = []
    for cell in cells:
        folder = out / "cells" / cell.name
        done = folder / "cell.json"
        record = finished(done, ("name", "status"), console)
        if record is not None and record["status"] == "ok" and record["name"] == cell.name and "harmful_score" in record:
            results.append(record)
            continue
        console.rule(f"cell {cell.name}")
        model = aligned[cell.method] if aligned else None
        try:
            result = run_cell(cell, cell_recipe(cell, model) if model else recipes[cell.name], folder, evaluate, console,
                              (launch, recipe, cell_sets(cell, overrides, alignment, model)) if launch else None)
        except Exception as e:  # noqa: BLE001 - one failed cell must not stop the grid
            if write_failure(e) is not None:  # a full disk fails every cell after it: stop, keep what is done
                raise
            result = {**cell.record(), "status": "failed", "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=5)}
            console.print(f"[red]cell {cell.name} failed:[/] {result['error']}")
        atomic_write_text(done, json.dumps(result, indent=1) + "\n")
        results.append(result)
    return {"recipe": str(recipe), "overrides": overrides, "base": base, "aligned_before": own,
            "align_recipe": str(alignment.recipe) if alignment else None, "cells": results}
