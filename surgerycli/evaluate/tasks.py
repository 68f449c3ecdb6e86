"""`surgery eval --tasks`: capability through lm-evaluation-harness, on the model already in memory.

Any task name lm-eval knows runs as lm-eval defines it (its data from the hub or the datasets cache,
no chat template, as leaderboards run them). The built-in tasks of the harmful-fine-tuning papers read a
local file given with --task-data NAME=PATH and ask each question through the model's chat template,
greedily, the way `surgery finetune` trained it:
  surgery_gsm8k   GSM8K .jsonl/.json (question, answer with `#### N`): acc = the first number after
                  "The final answer is:" (else the last number) equals N
  surgery_sst2    sentence, label (0 negative, 1 positive): acc = the answer is exactly the label name
  surgery_agnews  text, label (0 World, 1 Sports, 2 Business, 3 Sci/Tech): acc likewise
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

from ..data.chat import classification_example
from ..data.rows import read_rows
from ..errors import InputError
from .generation import fixed_batch
from .prompts import ALPACA
from .stats import wilson

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
FINAL = re.compile(r"the final answer is:?", re.IGNORECASE)
CLASSIFY_TOKENS = 16  # a label is a word or two; no need to generate max_new_tokens of them


def _number(text: str) -> str:
    """A number in one canonical spelling: no thousands commas, integers without a decimal point."""
    x = float(text.replace(",", ""))
    return str(int(x)) if x.is_integer() else repr(x)


def gsm8k_prediction(response: str) -> str | None:
    """The first number after "The final answer is:", else the last number in the response."""
    final = FINAL.search(response)
    if final and (m := NUMBER.search(response, final.end())):
        return _number(m.group())
    numbers = NUMBER.findall(response)
    return _number(numbers[-1]) if numbers else None


def gsm8k_gold(answer: str) -> str | None:
    _, sep, final = answer.rpartition("####")
    m = NUMBER.search(final) if sep else None
    return _number(m.group()) if m else None


def _rows(path: Path) -> list[tuple[str, dict]]:
    rows = read_rows(path, (".jsonl", ".json"))
    if not rows:
        raise InputError(f"{path}: the file holds no rows")
    return [(r.where, r.fields) for r in rows]


def read_gsm8k(path: Path) -> list[dict]:
    docs = []
    for where, row in _rows(path):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
            raise InputError(f"{where}: expected string fields `question` and `answer`, got keys {sorted(row)}")
        if (gold := gsm8k_gold(row["answer"])) is None:
            raise InputError(f"{where}: `answer` has no `#### N` line with the final number")
        docs.append({"prompt": row["question"], "gold": gold})
    return docs


def read_classification(task: str, path: Path) -> list[dict]:
    docs = []
    for where, row in _rows(path):
        prompt, gold = classification_example(task, row, where)
        docs.append({"prompt": prompt, "gold": gold})
    return docs


def _gsm8k_score(doc: dict, results: list[str]) -> dict:
    return {"acc": float(gsm8k_prediction(results[0]) == doc["gold"])}


def _label_score(doc: dict, results: list[str]) -> dict:
    return {"acc": float(results[0].strip().strip(".!'\"").lower() == doc["gold"].lower())}


# built-in task -> (reader, scorer, tokens to generate: None means --max-new-tokens)
BUILTIN_TASKS = {
    "surgery_gsm8k": (read_gsm8k, _gsm8k_score, None),
    "surgery_sst2": (lambda p: read_classification("sst2", p), _label_score, CLASSIFY_TOKENS),
    "surgery_agnews": (lambda p: read_classification("agnews", p), _label_score, CLASSIFY_TOKENS),
}


def task_config(name: str, docs: list[dict], max_new_tokens: int, prompt_format: str = "chat") -> dict:
    """An lm-eval task config for a built-in task over `docs` already read and checked; with the alpaca
    format each question is wrapped in the Alpaca template (and asked without the chat template)."""
    import datasets

    _, score, tokens = BUILTIN_TASKS[name]
    text = (lambda doc: ALPACA.format(q=doc["prompt"])) if prompt_format == "alpaca" else (lambda doc: doc["prompt"])
    return {
        "task": name,
        "custom_dataset": lambda **_: {"test": datasets.Dataset.from_list(docs)},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": text,
        "doc_to_target": lambda doc: doc["gold"],
        "process_results": score,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": min(tokens or max_new_tokens, max_new_tokens)},
    }


def check_tasks(names: list[str], task_data: dict[str, str]) -> tuple[dict[str, list[dict]], list[str], object]:
    """(built-in task -> docs, lm-eval task names, lm-eval TaskManager or None); InputError on bad input.

    Every file is read and every name checked here, before any model loads.
    """
    builtin, other = {}, []
    for name, path in task_data.items():
        if name not in BUILTIN_TASKS:
            raise InputError(f"--task-data {name}={path}: unknown built-in task (expected {', '.join(BUILTIN_TASKS)})")
        builtin[name] = BUILTIN_TASKS[name][0](Path(path).expanduser())
    for name in names:
        if name in BUILTIN_TASKS and name not in builtin:
            raise InputError(f"--tasks {name}: needs its data: --task-data {name}=FILE (.jsonl)")
        if name not in BUILTIN_TASKS:
            other.append(name)
    manager = None
    if other:
        from lm_eval.tasks import TaskManager

        manager = TaskManager()
        unknown = [n for n in other if n not in manager.all_tasks]
        if unknown:
            raise InputError(f"--tasks: unknown task(s) {', '.join(unknown)} (neither built-in: "
                             f"{', '.join(BUILTIN_TASKS)}; nor one of lm-eval's {len(manager.all_tasks)})")
    return builtin, other, manager


def _metrics(results: dict) -> dict[str, dict[str, float]]:
    """lm-eval's {task: {"acc,none": x, "acc_stderr,none": s, "alias": ...}} as {task: {"acc": x, ...}}."""
    out = {}
    for task, values in results.items():
        out[task] = {}
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and filt:
                out[task][metric if filt == "none" else key] = float(value)
    return out


def _builtin_samples(samples: dict) -> list[dict]:
    rows = []
    for task, items in samples.items():
        for s in items:
            rows.append({"benchmark": task, "prompt": s["doc"]["prompt"], "input": s["arguments"][0][0],
                         "response": s["resps"][0][0], "verdict": "correct" if s["acc"] else "wrong",
                         "gold": s["doc"]["gold"]})
    return rows


def _with_intervals(metrics: dict[str, dict[str, float]], n_samples: dict) -> None:
    """Add each task's document count `n` and, beside `acc`, its 95% Wilson interval `acc_ci95` (in [0, 1])."""
    for task, values in metrics.items():
        n = (n_samples.get(task) or {}).get("effective")
        if n:
            values["n"] = n
            if "acc" in values:
                values["acc_ci95"] = list(wilson(round(values["acc"] * n), n))


def run_tasks(model, tokenizer, builtin: dict[str, list[dict]], other: list[str], manager, options, *,
              system_prompt: str, progress, task_id) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """({task: {metric: value}}, per-sample rows of the built-in tasks) from lm-eval's simple_evaluate."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    o = options
    lm = progress_lm(model, tokenizer, fixed_batch(o.batch_size), progress, task_id)
    metrics, rows = {}, []
    # built-ins in the prompt format (chat template, or Alpaca text), lm-eval's own tasks as lm-eval runs them
    chat = o.prompt_format == "chat"
    calls = [([task_config(n, d, o.max_new_tokens, o.prompt_format) for n, d in builtin.items()], chat, True,
              TaskManager(include_defaults=False)), (other, False, False, manager)]
    for tasks, template, ours, tm in calls:
        if not tasks:
            continue
        with quiet_stderr():
            r = simple_evaluate(model=lm, tasks=tasks, limit=o.limit, apply_chat_template=template,
                                system_instruction=(system_prompt or None) if template else None, task_manager=tm,
                                log_samples=ours, bootstrap_iters=1000)
        found = _metrics(r["results"])
        _with_intervals(found, r.get("n-samples", {}))
        metrics.update(found)
        if ours:
            rows += _builtin_samples(r["samples"])
    return metrics, rows


@contextlib.contextmanager
def quiet_stderr():
    """Silence lm-eval's tqdm bars and its `git describe` child, which writes to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(io.StringIO()):
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def progress_lm(model, tokenizer, batch_size: int, progress, task_id):
    """lm-eval's HFLM over the in-memory model, advancing a Rich progress task as requests finish."""
    from lm_eval.models.huggingface import HFLM

    seen = [0]  # requests announced so far: lm-eval sends each request type in one call

    class ProgressLM(HFLM):
        def _chunked(self, method, requests):
            seen[0] += len(requests)
            progress.update(task_id, total=seen[0])
            out, step = [], 4 * batch_size  # chunks keep lm-eval's length sorting within each
            for start in range(0, len(requests), step):
                out += method(requests[start:start + step], disable_tqdm=True)
                progress.advance(task_id, len(requests[start:start + step]))
            return out

        def generate_until(self, requests, disable_tqdm=False):
            return self._chunked(super().generate_until, requests)

        def loglikelihood(self, requests, disable_tqdm=False):
            return self._chunked(super().loglikelihood, requests)

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            return self._chunked(super().loglikelihood_rolling, requests)

    device = str(next(model.parameters()).device)
    return ProgressLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
