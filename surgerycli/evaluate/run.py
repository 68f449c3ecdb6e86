"""`surgery eval [ADAPTER ...]`: harmful score on safety benchmarks and capability through lm-eval.

Everything a run needs is read and checked first (benchmark files, task files, judge path, adapters and
their base models), so bad input fails before any model loads. Then each base model loads once; its
runs (the base itself, then each adapter attached and removed in turn) generate the same prompts,
batched, and run the capability tasks. The judge loads only after all generation, so the evaluated
model and a judge model never share memory. Outputs are written once at the end, each file whole.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from ..adapters import adapter_dir
from ..data.safety import Prompt, load_benchmark
from ..errors import InputError
from ..files import FolderLock, writing
from ..models import load_model, pick_device, pick_dtype, read_chat_template
from ..progress import PROGRESS_COLUMNS
from ..report.eval import tables, write_outputs
from .generation import batch_rows, encode, generate_ids
from .judges import judge_score, make_judge, refusal_phrase
from .options import EvalOptions
from .prompts import adds_special_tokens, prompt_text
from .provenance import data_sources, provenance
from .runs import Run, resolve_runs
from .stats import wilson_percent
from .tasks import check_tasks, run_tasks


def generate_run(model, tokenizer, run: Run, benchmarks: dict[str, list[Prompt]], options: EvalOptions,
                 progress: Progress) -> tuple[dict[str, tuple[list[str], list[str]]], int]:
    """Per benchmark: (the exact input texts the model got, its greedy responses), for one run; and the number
    of rows generated at once (`--batch-size auto`: found here once for the run's longest prompt, and printed)."""
    o, special = options, adds_special_tokens(options.prompt_format)
    encoded = {name: encode(tokenizer, [prompt_text(tokenizer, p.text, run.system_prompt, o.prompt_format)
                                        for p in prompts], special, o.max_input_tokens)  # generated from, and recorded
               for name, prompts in benchmarks.items()}
    rows = batch_rows(o.batch_size, model, [e for es in encoded.values() for e in es], o.max_new_tokens)
    if o.batch_size == "auto" and encoded:
        progress.console.print(f"{_short(run)}: {rows} rows at once (--batch-size auto)")
    out = {}
    for name, ids in encoded.items():
        task = progress.add_task(f"{_short(run)} {name}", total=len(ids))
        responses = generate_ids(model, tokenizer, ids, batch_size=rows, max_new_tokens=o.max_new_tokens,
                                 decode=o.decode,
                                 on_batch=lambda n, task=task: progress.advance(task, n))
        out[name] = ([tokenizer.decode(i) for i in ids], responses)
    return out, rows


def _short(run: Run) -> str:
    return Path(run.adapter).name if run.adapter else "base"


def evaluate_runs(runs: list[Run], benchmarks: dict[str, list[Prompt]], task_spec: tuple, options: EvalOptions, *,
                  device: torch.device, dtype: torch.dtype, progress: Progress) -> list[tuple[dict, dict, list[dict]]]:
    """Per run: (responses per benchmark, task metrics, task sample rows). Each base model loads once."""
    from peft import PeftModel

    builtin, other, manager = task_spec
    out: dict[int, tuple] = {}
    for base in dict.fromkeys(r.base for r in runs):
        loading = progress.add_task(f"loading {base}", total=None)
        model, tokenizer = load_model(base, dtype, device)
        progress.remove_task(loading)
        own_template = tokenizer.chat_template
        for i, run in enumerate(runs):
            if run.base != base:
                continue
            tokenizer.chat_template = run.chat_template or own_template
            attach = run.adapter is not None and run.attach
            m = PeftModel.from_pretrained(model, str(adapter_dir(run.adapter))).eval() if attach else model
            responses, rows_at_once = generate_run(m, tokenizer, run, benchmarks, options, progress)
            metrics, rows = {}, []
            if builtin or other:
                task = progress.add_task(f"{_short(run)} tasks", total=None)
                metrics, rows = run_tasks(m, tokenizer, builtin, other, manager, options, system_prompt=run.system_prompt,
                                          progress=progress, task_id=task)
            out[i] = (responses, metrics, rows, rows_at_once)
            if attach:
                model = m.unload()  # the LoRA layers come out; the base weights were never changed
        del model
    if device.type == "cuda":
        torch.cuda.empty_cache()  # room for a model judge
    return [out[i] for i in range(len(runs))]


def judge_runs(judge, runs: list[Run], benchmarks: dict[str, list[Prompt]], generated: list, batch_size: int | str,
               progress: Progress) -> tuple[list[dict], list[dict]]:
    """(results.json run records, samples.jsonl rows) once every response is judged."""
    records, samples = [], []
    for i, (run, (responses, metrics, task_rows, rows_at_once)) in enumerate(zip(runs, generated)):
        safety = {}
        for name, prompts in benchmarks.items():
            inputs, answers = responses[name]
            task = progress.add_task(f"judging {_short(run)} {name}", total=len(prompts))
            verdicts = judge.verdicts([p.text for p in prompts], answers, batch_size)
            progress.advance(task, len(prompts))
            harmful = sum(h for h, _ in verdicts)
            safety[name] = {"judge": judge.name, "n": len(prompts), "harmful": harmful,
                            "harmful_score": 100.0 * harmful / len(prompts), "ci95": wilson_percent(harmful, len(prompts))}
            for p, text, response, (is_harmful, note) in zip(prompts, inputs, answers, verdicts):
                samples.append({"run": i, "adapter": run.adapter, "benchmark": name, "category": p.category,
                                "prompt": p.text, "input": text, "response": response,
                                "verdict": "harmful" if is_harmful else "safe", "judge": judge.name, "note": note,
                                "score": judge_score(judge, note), "refusal_phrase": refusal_phrase(response)})
        samples += [{"run": i, "adapter": run.adapter, **row} for row in task_rows]
        records.append({"adapter": run.adapter, "base": run.base, "safety": safety, "tasks": metrics,
                        "generation_rows": rows_at_once})
    return records, samples


def run_eval(adapters: list[str], options: EvalOptions, *, base: str | None, include_base: bool = False,
             system_prompt: str | None = None, chat_template: Path | None = None, out: Path | None = None,
             device: str = "auto", dtype: str = "auto", console: Console) -> list[dict]:
    """Evaluate every run; the results.json run records (and the files under `out` when given, written while
    holding its lock: two evaluations into one folder are refused)."""
    if out is not None and out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder (expected the folder for the results)")
    kept = lambda: "nothing of this evaluation was written (results.json comes last)"  # noqa: E731
    with (writing(out, kept) if out else contextlib.nullcontext()), \
            (FolderLock(out, "out") if out else contextlib.nullcontext()):
        return _evaluate(adapters, options, base=base, include_base=include_base, system_prompt=system_prompt,
                         chat_template=chat_template, out=out, device=device, dtype=dtype, console=console)


def _evaluate(adapters: list[str], options: EvalOptions, *, base: str | None, include_base: bool,
              system_prompt: str | None, chat_template: Path | None, out: Path | None, device: str, dtype: str,
              console: Console) -> list[dict]:
    o, started, t0 = options, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.time()
    template = read_chat_template(chat_template, "--chat-template") if chat_template else None
    runs = resolve_runs(adapters, base, include_base, system_prompt, template)
    for r in runs:
        if r.recorded_base:
            console.print(f"warning: {r.adapter} was trained on {r.recorded_base}; evaluating it on {r.base}",
                          style="yellow", soft_wrap=True, markup=False, highlight=False)
    data = dict(o.safety_data)
    loaded = {n: load_benchmark(n, data.get(n), o.limit, o.beavertails_rows) for n in o.safety}
    benchmarks = {n: b.prompts for n, b in loaded.items()}
    task_files = dict(o.task_data)
    task_spec = check_tasks(list(o.tasks), task_files)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    judge_obj = make_judge(o.judge, dev, dt)
    if not benchmarks and not (task_spec[0] or task_spec[1]):
        raise InputError("nothing to measure: --safety none and no --tasks or --task-data")
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True) as progress:
        generated = evaluate_runs(runs, benchmarks, task_spec, o, device=dev, dtype=dt, progress=progress)
        records, samples = judge_runs(judge_obj, runs, benchmarks, generated, o.batch_size, progress)
    for table in tables(records):
        console.print(table)
    if out is not None:
        sources = data_sources({n: b.source for n, b in loaded.items()}, task_spec, task_files, o.limit, records[0])
        prov = provenance(o, data=sources, judge=judge_obj, device=dev, dtype=dt, started_at=started,
                          wall_time_s=time.time() - t0)
        prov["base_mismatch"] = [{"adapter": r.adapter, "recorded": r.recorded_base, "evaluated_on": r.base}
                                 for r in runs if r.recorded_base]
        write_outputs(out, records, samples, prov)
        console.print(f"wrote {out}/results.json, samples.jsonl, report.md, scores.png")
    return records
