"""`surgery sweep RECIPE --poison-ratios ... --methods sft,surgery [--alphas ...] [--grid KEY=V1,V2] [--seeds 0,1]
--out DIR`: the paper's grid, crossed with any recipe keys and seeds.

Library code shared by the sweep and demo commands. Each cell is a `surgery finetune` of the recipe at
one poison ratio and registered defense (Surgery once per alpha), at one value of each `--grid` key and
one seed (`train.seed`: the data mix, LoRA init and reference draws), followed by a `surgery eval` of its
adapter. A cell is finished when its cell.json exists (written last),
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
from ..train.recipe import Recipe, load_recipe


def parse_floats(text: str, option: str, low: float = 0.0, high: float | None = None) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated numbers") from None
    bad = [v for v in values if v < low or (high is not None and v > high)]
    if not values or bad:
        raise InputError(f"{option} {text!r}: expected numbers in [{low:g}, {high if high is not None else 'inf'}]")
    return values


OWNED_KEYS = {"data.poison_ratio": "--poison-ratios", "defense.method": "--methods",
              "train.seed": "--seeds", "model.name": "the recipe (or --align-recipe)",
              "output.dir": "--out"}  # set by the sweep itself: --grid refuses them


def cell_name(ratio: float, method: str, alpha: float | None, values: dict[str, str] | None = None,
              seed: int | None = None, options: dict[str, str] | None = None) -> str:
    """`p0.1-surgery-a300` (`p0.1-lisa-rho=0.5` for the method's own axes), then `-KEY=VALUE` per grid key and
    `-s1` for a seed: a cell's values in its name."""
    return (f"p{ratio:g}-{method}" + (f"-a{alpha:g}" if alpha is not None else "")
            + "".join(f"-{k}={v}" for k, v in (options or {}).items())
            + "".join(f"-{k}={v}" for k, v in (values or {}).items()) + (f"-s{seed}" if seed is not None else ""))


@dataclass(frozen=True)
class Cell:
    """One point of a sweep's grid: what its fine-tune changes in the recipe. Its name holds its values."""

    poison_ratio: float
    method: str
    alpha: float | None = None  # Surgery's alpha (None for every other method)
    grid: tuple[tuple[str, str], ...] = ()  # (recipe key, value text) per --grid axis every method shares
    seed: int | None = None  # train.seed (None: the recipe's)
    options: tuple[tuple[str, str], ...] = ()  # (key of the method's own section, value text): its own axes

    @property
    def name(self) -> str:
        return cell_name(self.poison_ratio, self.method, self.alpha, dict(self.grid), self.seed, dict(self.options))

    def overrides(self, aligned: Path | None = None) -> list[str]:
        """The cell's recipe changes: its poison ratio and method (an alignment-stage method is attacked with
        plain SFT: its defense already ran), Surgery's alpha, grid values, seed, and the aligned model it
        attacks (when there is one)."""
        method = "sft" if stage(self.method) == "align" else self.method
        sets = [f"data.poison_ratio={self.poison_ratio}", f"defense.method={method}"]
        sets += [f"surgery.alpha={self.alpha}"] if self.alpha is not None else []
        sets += [f"{self.method}.{k}={v}" for k, v in self.options]
        sets += [f"{k}={v}" for k, v in self.grid]
        sets += [f"train.seed={self.seed}"] if self.seed is not None else []
        return sets + ([f"model.name={aligned}"] if aligned is not None else [])

    def record(self) -> dict:
        """The cell's fields as cell.json and sweep.json hold them."""
        return {"name": self.name, "poison_ratio": self.poison_ratio, "method": self.method, "alpha": self.alpha,
                "options": dict(self.options), "grid": dict(self.grid), "seed": self.seed}


def grid(ratios: list[float], methods: list[str], alphas: list[float], axes: dict[str, list[str]] | None = None,
         seeds: list[int] | None = None) -> list[Cell]:
    """Cells in run order: seed by seed (so a partial study is balanced), each grid point, then every method at
    the first ratio, then the next ratio; Surgery once per alpha. `axes`: recipe key -> value texts. An axis
    in a defense's own section (`lisa.rho`) multiplies that defense's cells only; the others, every cell."""
    import itertools

    from ..train.defenses import registry

    def points(keys: dict[str, list[str]]) -> list[tuple[tuple[str, str], ...]]:
        return [tuple(zip(keys, vs)) for vs in itertools.product(*keys.values())]

    axes = axes or {}
    shared = {k: v for k, v in axes.items() if k.partition(".")[0] not in registry()}
    own = {m: points({k.partition(".")[2]: v for k, v in axes.items() if k.partition(".")[0] == m}) for m in methods}
    return [Cell(r, method, a, values, seed, options)
            for seed in (seeds if seeds is not None else [None]) for values in points(shared) for r in ratios
            for method in methods for a in (alphas if method == "surgery" else [None]) for options in own[method]]


def parse_grid(texts: list[str]) -> dict[str, list[str]]:
    """`--grid KEY=V1,V2,...` (repeatable) -> {KEY: [V1, V2, ...]}; the values stay text, read as `--set` reads
    them. InputError for a bad one; the keys are checked when each cell's recipe is validated."""
    axes: dict[str, list[str]] = {}
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip()
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or "." not in key or not items:
            raise InputError(f"--grid {text!r}: expected SECTION.KEY=V1,V2,... (e.g. train.learning_rate=1e-4,2e-4)")
        if key in OWNED_KEYS:
            raise InputError(f"--grid {key}: the sweep sets this key itself; use {OWNED_KEYS[key]}")
        if key in axes:
            raise InputError(f"--grid {key}: given twice; list every value in one --grid")
        if len(set(items)) != len(items):
            raise InputError(f"--grid {text!r}: a value is listed twice")
        axes[key] = items
    return axes


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 0,1,2` -> [0, 1, 2] (None: no option, each cell keeps the recipe's train.seed)."""
    if text is None:
        return None
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--seeds {text!r}: expected comma-separated integers >= 0") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text!r}: expected distinct comma-separated integers >= 0")
    return seeds


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
            recipe = load_recipe(alignment.recipe, alignment.sets(method), str(run))
            run_finetune(recipe, resume=True, console=console)
            with console.status(f"merging {run}"):
                merge_adapter(str(run), model, None, DTYPES[recipe.model.dtype])
    return {m: alignment.folders(m)[1] for m in methods}


def plan(recipe: Path, overrides: list[str], poison_ratios: str, methods: str, alphas: str | None,
         align_recipe: Path | None = None, grid_texts: list[str] | None = None, seeds: str | None = None) -> list[Cell]:
    """The grid from the command-line texts; InputError for a bad list. Alphas default to the recipe's."""
    ratios = parse_floats(poison_ratios, "--poison-ratios", 0.0, 1.0)
    axes, seed_list = parse_grid(grid_texts or []), parse_seeds(seeds)
    names = parse_methods(methods)
    from ..train.defenses import registry

    for key in axes:
        section = key.partition(".")[0]
        if section in registry() and section not in names:
            raise InputError(f"--grid {key}: {section} is not among --methods ({','.join(names)}); its own axis would "
                             f"multiply no cell")
        if section in registry() and stage(section) == "align":
            raise InputError(f"--grid {key}: {section} runs when the model is aligned, once per sweep; set its option "
                             f"with --align-set {key}=VALUE (a sweep per value)")
    aligning = [m for m in names if stage(m) == "align"]
    if aligning and align_recipe is None:
        raise InputError(f"--methods {','.join(aligning)}: alignment-stage defenses align the model before the attack; "
                         f"give the alignment recipe with --align-recipe ALIGN.toml")
    if "surgery.alpha" in axes:  # the long form of --alphas
        if alphas is not None:
            raise InputError("--grid surgery.alpha: given with --alphas too; use one")
        alphas = ",".join(axes.pop("surgery.alpha"))
    if alphas is None:
        alpha_list = [load_recipe(recipe, overrides, None, check_files=False).methods["surgery"].alpha]
    else:
        alpha_list = parse_floats(alphas, "--alphas")
    return grid(ratios, names, alpha_list, axes, seed_list)


def evaluator(options: EvalOptions, console: Console):
    """`evaluate(adapters, out_dir, base=None) -> records`: `surgery eval` with the sweep's eval options."""
    from ..evaluate.run import run_eval

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
            "fa_ci95": [round(100 * x, 2) for x in ci] if ci else None, "fa_n": task.get("n")}


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
    from ..train.finetune import run_finetune

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
            "label": summary["label"], "final_metrics": summary["final_metrics"],
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


def before_attack(model: str, file: Path, folder: Path, evaluate, console: Console) -> dict:
    """The scores of a model before the attack, evaluated once (file is written last; a rerun reads it)."""
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
        return load_recipe(recipe, overrides + cell.overrides(aligned), str(out / "cells" / cell.name / "finetune"))

    recipes = {cell.name: cell_recipe(cell) for cell in cells}
    methods = list(dict.fromkeys(c.method for c in cells))
    if alignment is not None:
        for m in methods:
            load_recipe(alignment.recipe, alignment.sets(m), str(alignment.folders(m)[0]))
    aligned = align_models(alignment, methods, console) if alignment is not None else None
    base_name = str(alignment.folders("sft")[1]) if alignment else next(iter(recipes.values())).model.name
    base = before_attack(base_name, out / "base.json", out / "base-eval", evaluate, console)
    own = {m: before_attack(str(aligned[m]), out / f"base-{m}.json", out / f"base-eval-{m}", evaluate, console)
           for m in methods if aligned and stage(m) == "align"}
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
                              (launch, recipe, overrides + cell.overrides(model)) if launch else None)
        except Exception as e:  # noqa: BLE001 - one failed cell must not stop the grid
            result = {**cell.record(), "status": "failed", "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=5)}
            console.print(f"[red]cell {cell.name} failed:[/] {result['error']}")
        atomic_write_text(done, json.dumps(result, indent=1) + "\n")
        results.append(result)
    return {"recipe": str(recipe), "overrides": overrides, "base": base, "aligned_before": own,
            "align_recipe": str(alignment.recipe) if alignment else None, "cells": results}
