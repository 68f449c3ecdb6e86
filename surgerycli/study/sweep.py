"""`surgery sweep RECIPE --poison-ratios ... --methods sft,surgery [--alphas ...] --out DIR`: the paper's grid.

Library code shared by the sweep and demo commands. Each cell is a `surgery finetune` of the recipe at
one poison ratio and registered defense (Surgery once per alpha),
followed by a `surgery eval` of its adapter. A cell is finished when its cell.json exists (written last),
so a rerun skips finished cells and resumes an interrupted fine-tune from its checkpoint. A cell that
fails is recorded with its error and the sweep goes on. The base model is evaluated once, as the
"before the attack" row. With an `Alignment` (`--align-recipe`) the sweep first aligns: plain SFT for
the fine-tuning-stage methods, and each alignment-stage method its own model, each merged once; each
aligned model is evaluated once before the attack. `report.sweep` writes sweep.json, sweep.md (both
table layouts) and sweep.png.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..errors import InputError
from ..evaluate.options import EvalOptions
from ..files import atomic_write_text
from ..train.recipe import load_recipe


def parse_floats(text: str, option: str, low: float = 0.0, high: float | None = None) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated numbers") from None
    bad = [v for v in values if v < low or (high is not None and v > high)]
    if not values or bad:
        raise InputError(f"{option} {text!r}: expected numbers in [{low:g}, {high if high is not None else 'inf'}]")
    return values


def cell_name(ratio: float, method: str, alpha: float | None) -> str:
    return f"p{ratio:g}-{method}" + (f"-a{alpha:g}" if alpha is not None else "")


def grid(ratios: list[float], methods: list[str], alphas: list[float]) -> list[dict]:
    """Cells in run order: every method at the first ratio, then the next ratio; Surgery once per alpha."""
    cells = []
    for r in ratios:
        for method in methods:
            for a in (alphas if method == "surgery" else [None]):
                cells.append({"name": cell_name(r, method, a), "poison_ratio": r, "method": method, "alpha": a})
    return cells


def parse_methods(methods: str) -> list[str]:
    """`--methods` names, each a registered defense (`all`: every one); InputError listing them otherwise."""
    from ..train.defenses import registry

    names = list(registry()) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    if not names or set(names) - set(registry()):
        raise InputError(f"--methods {methods!r}: expected `all` or a comma-separated list of {', '.join(registry())}")
    return names


def stage(method: str) -> str:
    from ..train.defenses import registry

    return registry()[method].stage


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
        m = method if stage(method) == "align" else "sft"
        tail = "" if m == "sft" else f"-{m}"
        return self.root / f"align{tail}", self.root / f"aligned{tail}"

    def sets(self, method: str) -> list[str]:
        return [*self.overrides, f"defense.method={method if stage(method) == 'align' else 'sft'}"]


def align_models(alignment: Alignment, methods: list[str], console: Console) -> dict[str, Path]:
    """method -> the aligned model its cells attack, each aligned (and merged) once; reruns skip finished ones."""
    from ..models import DTYPES, merge_adapter
    from ..train.finetune import run_finetune

    for method in methods:
        run, model = alignment.folders(method)
        if not (model / "config.json").is_file():
            console.rule(f"alignment stage: {'SFT' if stage(method) != 'align' else method} -> {model}")
            run_finetune(alignment.recipe, alignment.sets(method), str(run), False, True, console)
            dtype = load_recipe(alignment.recipe, alignment.sets(method), None, check_files=False).model.dtype
            with console.status(f"merging {run}"):
                merge_adapter(str(run), model, None, DTYPES[dtype])
    return {m: alignment.folders(m)[1] for m in methods}


def plan(recipe: Path, overrides: list[str], poison_ratios: str, methods: str, alphas: str | None,
         align_recipe: Path | None = None) -> list[dict]:
    """The grid from the command-line texts; InputError for a bad list. Alphas default to the recipe's."""
    ratios = parse_floats(poison_ratios, "--poison-ratios", 0.0, 1.0)
    names = parse_methods(methods)
    aligning = [m for m in names if stage(m) == "align"]
    if aligning and align_recipe is None:
        raise InputError(f"--methods {','.join(aligning)}: alignment-stage defenses align the model before the attack; "
                         f"give the alignment recipe with --align-recipe ALIGN.toml")
    if alphas is None:
        return grid(ratios, names, [load_recipe(recipe, overrides, None, check_files=False).methods["surgery"].alpha])
    return grid(ratios, names, parse_floats(alphas, "--alphas"))


def evaluator(options: EvalOptions, console: Console):
    """`evaluate(adapters, out_dir, base=None) -> records`: `surgery eval` with the sweep's eval options."""
    from ..evaluate.run import run_eval

    def evaluate(adapters: list[str], out: Path, base: str | None = None) -> list[dict]:
        return run_eval(adapters, options, base=base, out=out, console=console)

    return evaluate


def cell_overrides(cell: dict, aligned: dict[str, Path] | None = None) -> list[str]:
    """A cell's recipe changes: its poison ratio and method (an alignment-stage method is attacked with plain
    SFT: its defense already ran), Surgery's alpha, and the aligned model it attacks (when there is one)."""
    method = "sft" if stage(cell["method"]) == "align" else cell["method"]
    sets = [f"data.poison_ratio={cell['poison_ratio']}", f"defense.method={method}"]
    sets += [f"surgery.alpha={cell['alpha']}"] if cell["alpha"] is not None else []
    return sets + ([f"model.name={aligned[cell['method']]}"] if aligned else [])


def headline(records: list[dict]) -> dict:
    """The first benchmark's harmful score and the first task's accuracy (%) of an eval run, with their
    95% Wilson intervals."""
    run = records[0]
    safety = next(iter(run["safety"].values())) if run["safety"] else {}
    task = next(iter(run["tasks"].values())) if run["tasks"] else {}
    acc, ci = task.get("acc"), task.get("acc_ci95")
    return {"harmful_score": safety.get("harmful_score"), "hs_ci95": safety.get("ci95"),
            "accuracy": 100 * acc if acc is not None else None,
            "fa_ci95": [round(100 * x, 2) for x in ci] if ci else None}


def run_cell(recipe: Path, overrides: list[str], cell: dict, folder: Path, evaluate, console: Console,
             aligned: dict[str, Path] | None = None) -> dict:
    from ..train.finetune import run_finetune

    summary = run_finetune(recipe, overrides + cell_overrides(cell, aligned), str(folder / "finetune"), False, True,
                           console)
    scores = headline(evaluate([str(folder / "finetune")], folder / "eval"))
    return {**cell, "status": "ok", **scores,
            "positive_heads_before": summary["positive_heads_before"],
            "positive_heads_after": summary["positive_heads_after"], "steps": summary["steps"],
            "label": summary["label"], "final_metrics": summary["final_metrics"],
            "wall_time_s": summary["wall_time_s"]}


def before_attack(model: str, file: Path, folder: Path, evaluate, console: Console) -> dict:
    """The scores of a model before the attack, evaluated once (file is written last; a rerun reads it)."""
    if not file.is_file():
        console.rule(f"{model}: before the attack")
        atomic_write_text(file, json.dumps({"model": model, **headline(evaluate([], folder, base=model))}) + "\n")
    return json.loads(file.read_text())


def run_sweep(recipe: Path, overrides: list[str], cells: list[dict], out: Path, evaluate, console: Console,
              alignment: Alignment | None = None) -> dict:
    """Run every unfinished cell; `evaluate(adapters, out_dir, base=None) -> records` is a configured `surgery eval`.

    With an `alignment`, each cell attacks the model its method's alignment produced (aligned first, once).
    """
    methods = list(dict.fromkeys(c["method"] for c in cells))
    for cell in cells:  # every cell's recipe is validated before anything trains (aligned models come later)
        load_recipe(recipe, overrides + cell_overrides(cell), str(out / "cells" / cell["name"] / "finetune"))
    if alignment is not None:
        for m in methods:
            load_recipe(alignment.recipe, alignment.sets(m), str(alignment.folders(m)[0]))
    aligned = align_models(alignment, methods, console) if alignment is not None else None
    base_name = str(alignment.folders("sft")[1]) if alignment else load_recipe(recipe, overrides, None, check_files=False).model.name
    base = before_attack(base_name, out / "base.json", out / "base-eval", evaluate, console)
    own = {m: before_attack(str(aligned[m]), out / f"base-{m}.json", out / f"base-eval-{m}", evaluate, console)
           for m in methods if aligned and stage(m) == "align"}
    results = []
    for cell in cells:
        folder = out / "cells" / cell["name"]
        done = folder / "cell.json"
        if done.is_file() and json.loads(done.read_text())["status"] == "ok":
            results.append(json.loads(done.read_text()))
            continue
        console.rule(f"cell {cell['name']}")
        try:
            result = run_cell(recipe, overrides, cell, folder, evaluate, console, aligned)
        except Exception as e:  # noqa: BLE001 - one failed cell must not stop the grid
            result = {**cell, "status": "failed", "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=5)}
            console.print(f"[red]cell {cell['name']} failed:[/] {result['error']}")
        atomic_write_text(done, json.dumps(result, indent=1) + "\n")
        results.append(result)
    return {"recipe": str(recipe), "overrides": overrides, "base": base, "aligned_before": own,
            "align_recipe": str(alignment.recipe) if alignment else None, "cells": results}
