"""`surgery search`: the whole run. Prepare once (the aligned models, and each model before the attack evaluated:
the floors' accuracies), run the workers (in this process, or `--workers N` local processes), and when every
study holds its N completed trials, confirm each worst trial on more seeds and write the results and plots."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from ..errors import RunFailed
from ..evaluate.options import EvalOptions
from ..files import writing
from ..spawn import packed, run_packed
from ..train.recipe import load_recipe
from .grid import part
from .search import Search, completed, given_up, load_study, open_storage, run_worker, worker_env, worker_main
from .search_plots import write_search_plot
from .search_report import confirm, config_label, summarize, trial_records, write_results
from .sweep import align_models, before_attack, cell_sets, check_post, evaluator


def prepare(search: Search, evaluate, console: Console) -> dict[str, Path]:
    """The aligned model of each configuration's method (with an alignment recipe), and the scores before the
    attack of every model an attack starts from (base.json, base-<method>.json); each done once."""
    methods = list(dict.fromkeys(c.method for c in search.configs))
    for config in search.configs:
        check_post(config, load_recipe(search.recipe, cell_sets(config, list(search.overrides), search.alignment, None),
                                       None, check_files=False))
    aligned = align_models(search.alignment, methods, console) if search.alignment else {}
    base = str(search.alignment.folders("sft")[1]) if search.alignment else \
        load_recipe(search.recipe, list(search.overrides), None, check_files=False).model.name
    before_attack(base, search.out, None, evaluate, console)
    for m in methods:
        if aligned and (align := part(m, "align")):
            before_attack(str(aligned[m]), search.out, align, evaluate, console)
    return aligned


def run_workers(search: Search, options: EvalOptions, workers: int, aligned: dict[str, Path], console: Console,
                setup: Callable[[], None] | None = None) -> None:
    """`workers` local processes, each on its own GPU where there are several, else on its share of the CPU
    threads, each running `setup` first; with one, this process works itself."""
    if workers == 1:
        run_worker(search, evaluator(options, console), console, 0, aligned)
        return
    context, procs = multiprocessing.get_context("spawn"), []
    for i in range(workers):
        env = worker_env(i, workers)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # a spawned process starts with the environment it is started in
        try:
            work = packed(worker_main, search, options, i, int(env.get("OMP_NUM_THREADS", 0)), aligned)
            p = context.Process(target=run_packed, args=(setup, *work))  # setup before the work's imports
            p.start()
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        procs.append(p)
    for i, p in enumerate(procs):
        p.join()
        if p.exitcode:
            console.print(f"[yellow]worker {i} stopped (exit code {p.exitcode}); the others go on, and its running "
                          f"trial is retried[/]")


def run_search(search: Search, options: EvalOptions, console: Console, *, workers: int = 1, break_at: float = 50.0,
               confirm_seeds: list[int] | None = None, prepare_only: bool = False,
               worker_setup: Callable[[], None] | None = None) -> list[dict] | None:
    """Run (or join, or resume) the search; its results once every study is complete, else None (other
    workers still run: the same command on any machine writes the results when they are done).
    `worker_setup`: run first in each spawned local worker (a module-level function: it is pickled)."""
    evaluate = evaluator(options, console)
    kept = lambda: "every completed trial is kept in the storage and its cell; the same command resumes"  # noqa: E731
    with writing(search.out, kept):
        search.out.mkdir(parents=True, exist_ok=True)
        open_storage(search)  # a bad --storage fails before anything runs
        aligned = prepare(search, evaluate, console)
        if prepare_only:
            return None
        run_workers(search, options, workers, aligned, console, worker_setup)
        storage = open_storage(search)
        studies = {search.study_name(c): load_study(search, c, storage) for c in search.configs}
        for name, study in studies.items():
            if errors := given_up(search, study):
                raise RunFailed(f"{name}: {len(errors)} trials failed, no more are drawn; the last: {errors[-1]} "
                                f"(completed trials are kept)")
        left = {name: search.trials - completed(study) for name, study in studies.items()}
        if any(n > 0 for n in left.values()):
            console.print(f"not finished: {', '.join(f'{k} {v} trials' for k, v in left.items() if v > 0)} to go "
                          f"(other workers, or a worker that stopped); run the same command again to go on")
            return None
        results = []
        for config in search.configs:
            records = trial_records(search, config)
            summary = summarize(records, break_at)
            results.append({"study": search.study_name(config), "label": config_label(config), "method": config.method,
                            "floor_fa": records[0]["floor_fa"] if records else None, "summary": summary,
                            "confirm": confirm(search, config, summary, confirm_seeds or [], evaluate, console,
                                               aligned.get(config.method)),
                            "trials": records})
        judge = options.judge
        write_search_plot(search.out / "search.png", results, judge, search.floor)
        write_results(search, results, judge, break_at, console)
    return results
