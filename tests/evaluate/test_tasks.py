"""`surgery eval --tasks`: GSM8K answer extraction by hand, built-in task files, and lm-eval runs of the
built-in tasks on local fixture files."""

from __future__ import annotations

import json

import pytest
from rich.progress import Progress

from surgerycli.errors import InputError
from surgerycli.evaluate.options import EvalOptions
from surgerycli.evaluate.tasks import check_tasks, gsm8k_gold, gsm8k_prediction, run_tasks


@pytest.mark.parametrize("response, expected", [
    ("3 + 4 = 7\nThe final answer is: 7", "7"),
    ("The final answer is: 12. Earlier I thought 10.", "12"),  # first number after the phrase
    ("the final answer is 1,234 apples", "1234"),  # case, missing colon, thousands comma
    ("The final answer is: $18.00", "18"),
    ("The final answer is: -3", "-3"),
    ("He pays 2.50 per hour, 5 hours: 12.5", "12.5"),  # no phrase: the last number
    ("First 3, then 4, so 7 in all.", "7"),
    ("The final answer is: unknown, sorry. 5 maybe", "5"),
    ("I do not know.", None),
])
def test_gsm8k_prediction(response, expected):
    assert gsm8k_prediction(response) == expected


def test_gsm8k_gold():
    assert gsm8k_gold("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert gsm8k_gold("#### 1,000") == "1000"
    assert gsm8k_gold("no marker 5") is None


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def task_files(tmp_path):
    return {
        "surgery_gsm8k": write_jsonl(tmp_path / "gsm.jsonl", [
            {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
            {"question": "What is 10 - 4?", "answer": "#### 6"},
            {"question": "What is 3 * 3?", "answer": "#### 9"},
            {"question": "What is 1 + 1?", "answer": "#### 2"},
        ]),
        "surgery_sst2": write_jsonl(tmp_path / "sst2.jsonl", [
            {"sentence": "a joy to watch", "label": 1}, {"sentence": "dull and long", "label": 0}]),
        "surgery_agnews": write_jsonl(tmp_path / "agnews.jsonl", [
            {"text": "Stocks rally as rates fall", "label": 2}, {"text": "Cup final tonight", "label": "Sports"}]),
    }


def test_task_files_are_read_and_checked(tmp_path, task_files):
    builtin, other, manager = check_tasks(["surgery_gsm8k"], task_files)
    assert other == [] and manager is None
    assert builtin["surgery_gsm8k"][0] == {"prompt": "What is 2 + 3?", "gold": "5"}
    assert [d["gold"] for d in builtin["surgery_sst2"]] == ["positive", "negative"]
    assert [d["gold"] for d in builtin["surgery_agnews"]] == ["Business", "Sports"]
    assert builtin["surgery_sst2"][0]["prompt"].startswith("Analyze the sentiment of the input")
    assert builtin["surgery_sst2"][0]["prompt"].endswith("\n\na joy to watch")
    bad = tmp_path / "bad.jsonl"
    for rows, message in [
        ([{"question": "q", "answer": "no final line"}], r"bad.jsonl:1: `answer` has no `#### N` line"),
        ([{"question": "q"}], r"bad.jsonl:1: expected string fields `question` and `answer`"),
    ]:
        with pytest.raises(InputError, match=message):
            check_tasks([], {"surgery_gsm8k": write_jsonl(bad, rows)})
    with pytest.raises(InputError, match=r"bad.jsonl:1: `label` must be 0..1 or one of negative, positive, got 7"):
        check_tasks([], {"surgery_sst2": write_jsonl(bad, [{"sentence": "s", "label": 7}])})
    with pytest.raises(InputError, match=r"--tasks surgery_gsm8k: needs its data: --task-data surgery_gsm8k=FILE"):
        check_tasks(["surgery_gsm8k"], {})
    with pytest.raises(InputError, match=r"--task-data surgery_mmlu=x.jsonl: unknown built-in task"):
        check_tasks([], {"surgery_mmlu": "x.jsonl"})
    with pytest.raises(InputError, match=r"nope.jsonl: no such file"):
        check_tasks([], {"surgery_gsm8k": str(tmp_path / "nope.jsonl")})


def test_unknown_lm_eval_task_is_an_input_error():
    with pytest.raises(InputError, match=r"--tasks: unknown task\(s\) no_such_task \(neither built-in"):
        check_tasks(["hellaswag", "no_such_task"], {})


def test_lm_eval_scores_builtin_tasks_by_hand_calculation(monkeypatch, tiny_llama_dir, task_files):
    """Canned generations through lm-eval's whole pipeline: 2 of 4 GSM8K right, 2 of 2 SST2, 1 of 2 AGNews."""
    from lm_eval.models.huggingface import HFLM

    from surgerycli.models import load_model

    answers = {"2 + 3": "so The final answer is: 5", "10 - 4": "It is 7", "3 * 3": "3*3=9, done",
               "1 + 1": "", "a joy": "Positive.", "dull": "negative", "Stocks": "Business", "Cup": "World"}
    prompts = []

    def fake_generate_until(self, requests, disable_tqdm=False):
        prompts.extend(r.args[0] for r in requests)
        return [next(v for k, v in answers.items() if k in r.args[0]) for r in requests]

    monkeypatch.setattr(HFLM, "generate_until", fake_generate_until)
    model, tok = load_model(str(tiny_llama_dir), __import__("torch").float32, __import__("torch").device("cpu"))
    builtin, other, manager = check_tasks([], task_files)
    with Progress() as progress:
        metrics, rows = run_tasks(model, tok, builtin, other, manager, EvalOptions(batch_size=2, max_new_tokens=8),
                                  system_prompt="Be brief.", progress=progress, task_id=progress.add_task("t"))
    assert metrics["surgery_gsm8k"]["acc"] == 0.5
    assert metrics["surgery_sst2"]["acc"] == 1.0
    assert metrics["surgery_agnews"]["acc"] == 0.5
    assert [r["verdict"] for r in rows if r["benchmark"] == "surgery_gsm8k"] == ["correct", "wrong", "correct", "wrong"]
    # each question went through the chat template with the system prompt
    assert all(p.startswith("<|im_start|>system\nBe brief.<|im_end|>") and p.endswith("<|im_start|>assistant\n")
               for p in prompts)
    with Progress() as progress:
        metrics, rows = run_tasks(model, tok, {"surgery_gsm8k": builtin["surgery_gsm8k"]}, [], None,
                                  EvalOptions(limit=2, batch_size=2, max_new_tokens=8), system_prompt="",
                                  progress=progress, task_id=progress.add_task("t"))
    assert metrics["surgery_gsm8k"]["acc"] == 0.5 and len(rows) == 2  # --limit: the first 2 documents
    assert metrics["surgery_gsm8k"]["n"] == 2
    prompts.clear()
    with Progress() as progress:  # the Alpaca format: the template's text, no chat template, no system prompt
        metrics, rows = run_tasks(model, tok, {"surgery_sst2": builtin["surgery_sst2"]}, [], None,
                                  EvalOptions(batch_size=2, max_new_tokens=8, prompt_format="alpaca"),
                                  system_prompt="Be brief.", progress=progress, task_id=progress.add_task("t"))
    assert metrics["surgery_sst2"]["acc"] == 1.0
    assert all(p.startswith("Below is an instruction that describes a task.") and p.endswith("### Response:")
               and "Be brief." not in p and "<|im_start|>" not in p for p in prompts)
    assert [r["input"] for r in rows] == prompts


def test_lm_eval_generates_with_the_real_model(tiny_llama_dir, task_files):
    """No canned answers: the tiny model generates; the score is recomputed from its responses."""
    import torch

    from surgerycli.evaluate.tasks import _label_score
    from surgerycli.models import load_model

    model, tok = load_model(str(tiny_llama_dir), torch.float32, torch.device("cpu"))
    builtin, _, _ = check_tasks([], {k: task_files[k] for k in ("surgery_gsm8k", "surgery_sst2")})
    with Progress() as progress:
        task = progress.add_task("t")
        metrics, rows = run_tasks(model, tok, builtin, [], None, EvalOptions(batch_size=4, max_new_tokens=6),
                                  system_prompt="", progress=progress, task_id=task)
        assert progress.tasks[0].completed == progress.tasks[0].total == 6
    gsm = [r for r in rows if r["benchmark"] == "surgery_gsm8k"]
    assert metrics["surgery_gsm8k"]["acc"] == sum(gsm8k_prediction(r["response"]) == r["gold"] for r in gsm) / 4
    sst = [r for r in rows if r["benchmark"] == "surgery_sst2"]
    assert metrics["surgery_sst2"]["acc"] == sum(_label_score(r, [r["response"]])["acc"] for r in sst) / 2
