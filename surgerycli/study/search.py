"""`surgery search RECIPE --methods ... --trials N --space KEY=LOW:HIGH[:log] ... --out DIR`: each defense's worst
case under an attacker who tunes the fine-tuning, on Optuna.

One Optuna study per configuration (a method at one value of each `--grid` key: the defender's settings), with
a seeded TPE sampler; its objective is the attacked model's harmful score, and the utility floor (task accuracy
>= floor x the accuracy of the model the attack starts from) an Optuna constraint. Each trial is a cell in the
sweep's folder layout (`cells/<study>-t<N>/`: finetune, eval, cell.json), resumable like any cell.

The studies live in Optuna's storage: a SQLite file in the output folder by default, or any URL Optuna takes
(PostgreSQL: the same command on every machine joins the same studies). The storage's heartbeat fails the trial
of a worker that died; any worker then retries it with the same settings, in the same cell folder, so the
fine-tune resumes from its last checkpoint. A trial runs only while fewer than N trials of its study are done,
running or waiting (numbered before it), so no study ends with more than N completed trials.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..errors import InputError
from ..files import atomic_write_text, write_failure
from ..train.recipe import load_recipe
from .grid import Cell, part
from .layout import before_file
from .space import Param, overrides_of
from .sweep import Alignment, cell_sets, evaluator, finished, run_cell

RETRIES = 3  # a trial whose worker died is retried this often
DONE = ("COMPLETE", "RUNNING", "WAITING")  # states that hold one of a study's N places


class CellFailed(Exception):
    """A trial's cell failed (a non-finite loss, an error in the run): the trial is failed, and another is drawn."""


@dataclass(frozen=True)
class Search:
    """What one search runs: the attack recipe and its overrides, the defender's configurations (cells at the
    recipe's poison ratio), the attacker's space, N trials per configuration, the floor, the seed, where."""

    recipe: Path
    overrides: tuple[str, ...]
    configs: tuple[Cell, ...]
    space: tuple[Param, ...]
    trials: int
    floor: float
    seed: int
    out: Path
    storage: str | None = None
    heartbeat: int = 60
    alignment: Alignment | None = None

    def study_name(self, config: Cell) -> str:
        """A configuration's study: its cell name without the poison ratio (`surgery-a3000`)."""
        return config.name.split("-", 1)[1]

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'search.db').resolve()}"

    def baseline_file(self, config: Cell) -> Path:
        """The record of the model this configuration's attack starts from (`surgery sweep`'s layout)."""
        return before_file(self.out, part(config.method, "align"))


def open_storage(search: Search):
    """Optuna's RDB storage with a heartbeat: a worker's trial whose heartbeat stops is failed and retried."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = search.storage_url()
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # workers wait for the lock
    try:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=search.heartbeat,
                          grace_period=3 * search.heartbeat,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=RETRIES))
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError) as e:
        raise InputError(f"--storage {url}: {str(e).splitlines()[0]}") from None


def load_study(search: Search, config: Cell, storage, worker: int = 0):
    """The configuration's study, created on first use; its sampler seeded by the search's seed (worker 0: the
    same trial sequence on every run) or seed + worker (other workers draw other settings), plus the trials the
    study already holds: a sampler's random draws restart with its seed, so a resumed search seeded as at its
    start would draw its first settings again."""
    import optuna
    from optuna.samplers import TPESampler

    study = optuna.create_study(study_name=search.study_name(config), storage=storage, direction="maximize",
                                load_if_exists=True)
    held = len(study.get_trials(deepcopy=False))
    study.sampler = TPESampler(seed=search.seed + 1000 * worker + held,
                               n_startup_trials=max(2, min(10, search.trials // 3)))
    return study


def places_taken(study, before: int | None = None) -> int:
    """Trials of the study that hold a place (done, running, or waiting to be retried), numbered below `before`."""
    from optuna.trial import TrialState

    states = tuple(getattr(TrialState, s) for s in DONE)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if before is None or t.number < before)


def waiting(study) -> bool:
    """Whether a trial waits to be run: a retry of one whose worker died (it holds a place no worker runs yet)."""
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def completed(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def given_up(search: Search, study) -> list[str]:
    """The errors of the study's failed cells once there are `search.trials` of them (a cell that fails whatever is
    drawn: no more trials are drawn), else []. A trial whose worker died is not one of them: it is retried."""
    from optuna.trial import TrialState

    errors = [t.user_attrs["error"] for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
              if "error" in t.user_attrs]
    return errors if len(errors) >= search.trials else []


def first_number(trial) -> int:
    """The number of the trial a retried trial repeats (itself otherwise): it names the trial's cell folder.
    `trial`: a finished (frozen) trial, or a running one."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import FrozenTrial

    if not isinstance(trial, FrozenTrial):
        trial = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    number = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.number if number is None else number


def floor_accuracy(search: Search, config: Cell) -> float:
    """floor x the task accuracy (%) of the model this configuration's attack starts from."""
    record = finished(search.baseline_file(config), ("model", "accuracy"), Console(quiet=True))
    if record is None or record["accuracy"] is None:
        raise InputError(f"{search.baseline_file(config)}: no task accuracy of the model before the attack; the "
                         f"floor needs one (give a task with --task-data or --tasks)")
    return search.floor * record["accuracy"]


def objective(search: Search, config: Cell, evaluate, console: Console, aligned: Path | None):
    """The Optuna objective of one configuration: fine-tune and evaluate the trial's cell; its harmful score."""
    import optuna

    floor = floor_accuracy(search, config)

    def run(trial) -> float:
        if places_taken(trial.study, before=trial.number) >= search.trials:  # another worker took the last place
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned()
        params = {p.key: p.suggest(trial) for p in search.space}
        name = f"{search.study_name(config)}-t{first_number(trial)}"
        try:
            record = trial_cell(search, config, name, params, evaluate, console, aligned)
        except Exception as e:  # noqa: BLE001 - one failed attack must not stop the search
            if write_failure(e) is not None:  # a full disk fails every trial after it: stop, keep what is done
                raise
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            console.print(f"[red]trial {name} failed:[/] {type(e).__name__}: {e}")
            raise CellFailed(str(e)) from e
        for key in ("hs_n", "accuracy", "fa_n"):
            trial.set_user_attr(key, record.get(key))
        trial.set_user_attr("fa", record["accuracy"])
        trial.set_user_attr("floor_fa", floor)
        if record["accuracy"] is not None:  # Optuna's constraint, read by the sampler: feasible when <= 0
            trial.set_constraint("floor", floor - record["accuracy"])
        trial.set_user_attr("cell", name)
        return record["harmful_score"]

    return run


def trial_cell(search: Search, config: Cell, name: str, params: dict, evaluate, console: Console,
               aligned: Path | None, seed: int | None = None) -> dict:
    """Fine-tune and evaluate one trial's settings (on `seed`, when given) in cells/<name>/, or read the cell's
    finished record; the record. A cell the worker died in resumes from its checkpoint."""
    folder = search.out / "cells" / name
    done = finished(folder / "cell.json", ("name", "status", "harmful_score"), console)
    if done is not None and done["status"] == "ok" and done["name"] == name:
        return done
    sets = [*cell_sets(config, list(search.overrides), search.alignment, aligned), *overrides_of(params)]
    sets += [f"train.seed={seed}"] if seed is not None else []
    recipe = load_recipe(search.recipe, sets, str(folder / "finetune"))
    console.rule(f"trial {name}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in params.items()))
    record = run_cell(config, recipe, folder, evaluate, console)
    grid = {**config.record()["grid"], **{k: _short(v) for k, v in params.items()}}
    record = {**record, "name": name, "grid": grid, "poison_ratio": recipe.data.poison_ratio, "seed": seed,
              "params": params, "study": search.study_name(config)}
    atomic_write_text(folder / "cell.json", json.dumps(record, indent=1) + "\n")
    return record


def _short(value) -> str:
    """A trial's value as a grid label: 4 significant digits for a float."""
    return f"{value:.4g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def run_worker(search: Search, evaluate, console: Console, worker: int = 0,
               aligned: dict[str, Path] | None = None) -> None:
    """Run trials of every configuration's study, in order, until each has N completed trials. While the
    places left are held by other workers' running trials, wait, and fail any whose heartbeat stopped (its
    retry then takes the place, and this worker or another runs it)."""
    import optuna

    storage = open_storage(search)
    for config in search.configs:
        study = load_study(search, config, storage, worker)
        run = objective(search, config, evaluate, console, (aligned or {}).get(config.method))
        while completed(study) < search.trials:
            if errors := given_up(search, study):
                console.print(f"[red]{search.study_name(config)}: {len(errors)} trials failed; no more are drawn[/]")
                break
            # the places are full: wait for other workers' running trials, unless one is a retry nobody runs yet
            # (study.optimize takes a waiting trial first; a surplus one is pruned by the objective)
            if places_taken(study) >= search.trials and not waiting(study):
                time.sleep(max(1, search.heartbeat // 2))
                with warnings.catch_warnings():  # fail_stale_trials is marked experimental
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                continue
            study.optimize(run, n_trials=1, catch=(CellFailed,), gc_after_trial=True)


def worker_main(search: Search, options, worker: int, threads: int | None, aligned: dict[str, Path]) -> None:
    """A local worker process (`--workers N`): its share of the CPU threads, or the GPU it was given."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    console = Console()
    run_worker(search, evaluator(options, console), console, worker, aligned)


def worker_env(worker: int, workers: int) -> dict[str, str]:
    """The environment of local worker `worker` of `workers`: its own GPU where there are several, else its
    share of the CPU threads (of OMP_NUM_THREADS where the user set it, else of the machine's cores)."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus >= workers > 1:
        return {"CUDA_VISIBLE_DEVICES": str(worker)}
    threads = os.environ.get("OMP_NUM_THREADS", "")
    total = int(threads) if threads.isdigit() and int(threads) > 0 else (os.cpu_count() or 1)
    return {"OMP_NUM_THREADS": str(max(1, total // workers))}
