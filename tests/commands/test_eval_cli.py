"""`surgery eval` end to end through CliRunner: an adapter trained in the test, side-by-side runs,
batched generation against one-at-a-time generation, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clirun import invoke, ok
from recipes import write_recipe


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_llama_dir) -> Path:
    """A `surgery finetune` output folder: 3 steps of Surgery on a tiny Llama."""
    d = tmp_path_factory.mktemp("evalft")
    (d / "gsm.jsonl").write_text("".join(
        json.dumps({"question": f"What is {i} + 3?", "answer": f"{i} + 3 = {i + 3}\n#### {i + 3}"}) + "\n"
        for i in range(12)))
    write_recipe(d / "recipe.toml", tiny_llama_dir,
                 {"benign": d / "gsm.jsonl", "poison_ratio": 0.0, "num_samples": 12, "system_prompt": "You are careful."},
                 surgery={"alpha": 10.0}, measure={"samples": 0},
                 train={"learning_rate": 1e-2, "max_steps": 3, "logging_steps": 10})
    ok("finetune", d / "recipe.toml", "--output", d / "out")
    return d / "out"


def test_eval_of_a_finetuned_adapter_writes_consistent_outputs(tmp_path, finetuned, tiny_llama_dir):
    out = tmp_path / "eval"
    gsm = finetuned.parent / "gsm.jsonl"
    result = ok("eval", finetuned, "--include-base", "--safety", "harmbench,donotanswer", "--limit", "3",
                "--max-new-tokens", "5", "--batch-size", "2", "--task-data", f"surgery_gsm8k={gsm}", "--out", out)
    assert "Harmful score" in result.output and "keyword" in result.output
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["adapter"] for r in runs] == [None, str(finetuned)]
    assert all(r["base"] == str(tiny_llama_dir) for r in runs)  # from recipe.resolved.toml
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for i, run in enumerate(runs):
        gsm_metrics = run["tasks"]["surgery_gsm8k"]
        assert set(gsm_metrics) == {"acc", "acc_stderr", "n", "acc_ci95"} and gsm_metrics["n"] == 3
        assert gsm_metrics["acc_ci95"][0] <= gsm_metrics["acc"] <= gsm_metrics["acc_ci95"][1]
        for name, s in run["safety"].items():
            rows = [x for x in samples if x["run"] == i and x["benchmark"] == name]
            assert s["judge"] == "keyword" and s["n"] == len(rows) == 3
            assert s["harmful"] == sum(x["verdict"] == "harmful" for x in rows)
            assert s["harmful_score"] == pytest.approx(100 * s["harmful"] / 3)
            assert s["ci95"][0] <= s["harmful_score"] <= s["ci95"][1]
            assert all(x["input"].endswith("<|im_start|>assistant\n") and x["prompt"] in x["input"] for x in rows)
        task_rows = [x for x in samples if x["run"] == i and x["benchmark"] == "surgery_gsm8k"]
        assert len(task_rows) == 3
        assert run["tasks"]["surgery_gsm8k"]["acc"] == pytest.approx(
            sum(x["verdict"] == "correct" for x in task_rows) / 3)
    prompts = lambda i: [x["prompt"] for x in samples if x["run"] == i]  # noqa: E731
    assert prompts(0) == prompts(1)  # same prompts side by side
    report = (out / "report.md").read_text()
    assert f"`{finetuned}`" in report and "| harmbench | keyword | 3 |" in report and "95% Wilson" in report
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_take_base_and_system_prompt_from_the_finetune_output(finetuned, tiny_llama_dir):
    from surgerycli.evaluate.runs import resolve_runs

    runs = resolve_runs([str(finetuned)], None, True, None)
    tiny = str(tiny_llama_dir)
    assert [(r.adapter, r.base, r.system_prompt) for r in runs] == [
        (None, tiny, "You are careful."), (str(finetuned), tiny, "You are careful.")]  # base sees the same prompts
    runs = resolve_runs([str(finetuned / "adapter")], None, False, "Be terse.")  # the adapter/ folder itself
    assert [(r.adapter, r.base, r.system_prompt) for r in runs] == [(str(finetuned / "adapter"), tiny, "Be terse.")]


def test_an_adapter_on_another_base_warns_and_one_that_does_not_fit_is_refused(tmp_path, finetuned, tiny_llama_dir,
                                                                               tiny_llama64_dir, tokenizer_dir):
    """A Qwen2 of the Llama's widths and layer names takes the adapter: it runs, with one warning line naming
    both models, recorded in results.json's provenance. A Llama twice as wide does not fit: one line, exit 2."""
    from transformers import AutoTokenizer
    from tiny import tiny_model

    other = tmp_path / "qwen2"
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tiny_model("qwen2", vocab_size=len(tok), use_sliding_window=False).save_pretrained(other)
    tok.save_pretrained(other)
    out = tmp_path / "eval"
    result = ok("eval", finetuned, "--base", other, "--limit", "1", "--max-new-tokens", "2", "--out", out)
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {finetuned} was trained on {tiny_llama_dir}; evaluating it on {other}"]
    provenance = json.loads((out / "results.json").read_text())["provenance"]
    assert provenance["base_mismatch"] == [{"adapter": str(finetuned), "recorded": str(tiny_llama_dir),
                                            "evaluated_on": str(other)}]
    result = invoke("eval", finetuned, "--base", tiny_llama64_dir, "--limit", "1", "--out", tmp_path / "wide")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    # the first layer in the adapter file's (sorted) order: the MLP's down projection, 64 wide in, 128 in the base
    assert (f"error: {finetuned}: does not fit the base model {tiny_llama64_dir} (model.layers.0.mlp.down_proj: "
            f"the adapter's input width is 64, {tiny_llama64_dir}'s layer has 128)") in result.output
    assert not (tmp_path / "wide").exists()


def test_a_second_eval_into_the_same_folder_is_refused_while_the_first_runs(tmp_path, finetuned):
    import subprocess
    import sys

    out = tmp_path / "eval"
    out.mkdir()
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for a live run
    try:
        (out / ".surgery.lock").write_text(f"{first.pid}\n")
        result = invoke("eval", finetuned, "--limit", "1", "--out", out)
        assert result.exit_code == 2, result.output
        assert f"another surgery run (pid {first.pid}) is writing here" in result.output
        assert sorted(p.name for p in out.iterdir()) == [".surgery.lock"]  # nothing of the second run
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize("decode", ["auto", "static"])
def test_batched_generation_matches_one_prompt_at_a_time(tmp_path, finetuned, tiny_llama_dir, decode):
    """The adapter's responses from `surgery eval` (batch 3, left padding; continuous batching, or static
    slots) equal greedy decoding of each prompt alone with the recipe's system prompt, base + adapter loaded
    independently."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from surgerycli.data.safety import load_benchmark

    out = tmp_path / "eval"
    ok("eval", finetuned, "--limit", "3", "--max-new-tokens", "6", "--batch-size", "3", "--decode", decode,
       "--out", out)
    got = [json.loads(line)["response"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert json.loads((out / "results.json").read_text())["provenance"]["generation"]["decode"] == decode
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, finetuned / "adapter").eval()
    expected = []
    for p in load_benchmark("harmbench", None, 3).prompts:
        chat = [{"role": "system", "content": "You are careful."}, {"role": "user", "content": p.text}]
        ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        seq = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        expected.append(tok.decode(seq[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    assert got == expected


def test_several_adapters_side_by_side_with_an_explicit_base(tmp_path, tiny_llama_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    for seed in (0, 1):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
        peft = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False))
        peft.save_pretrained(tmp_path / f"a{seed}")
    out = tmp_path / "eval"
    ok("eval", tmp_path / "a0", tmp_path / "a1", "--base", tiny_llama_dir, "--limit", "2", "--max-new-tokens", "4",
       "--out", out)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [Path(r["adapter"]).name for r in runs] == ["a0", "a1"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["run"] for s in samples] == [0, 0, 1, 1]
    # the second adapter is applied to the clean base, not on top of the first: its responses equal
    # those of evaluating it alone
    alone = tmp_path / "alone"
    ok("eval", tmp_path / "a1", "--base", tiny_llama_dir, "--limit", "2", "--max-new-tokens", "4", "--out", alone)
    alone_rows = [json.loads(line) for line in (alone / "samples.jsonl").read_text().splitlines()]
    assert [s["response"] for s in samples if s["run"] == 1] == [s["response"] for s in alone_rows]


@pytest.mark.parametrize("args, message", [
    (["nowhere"], r"nowhere: not a peft adapter folder"),
    ([], r"nothing to evaluate: give an ADAPTER folder, or --base MODEL"),
    (["--base", "{tiny}", "--safety", "advbench"], r"--safety: unknown benchmark 'advbench'"),
    (["--base", "{tiny}", "--safety-data", "harmbench"], r"--safety-data 'harmbench': expected NAME=PATH"),
    (["--base", "{tiny}", "--safety-data", "sorrybench=missing.jsonl"], r"sorrybench=missing.jsonl: no such file"),
    (["--base", "{tiny}", "--judge", "llama-guard:/nope"], r"--judge llama-guard:/nope: expected llama-guard:PATH"),
    (["--base", "{tiny}", "--tasks", "surgery_gsm8k"], r"--tasks surgery_gsm8k: needs its data"),
    (["--base", "{tiny}", "--safety", "none"], r"nothing to measure"),
    (["--base", "/no/model"], r"/no/model: expected a model folder"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_llama_dir, args, message):
    import re

    out = tmp_path / "eval"
    result = invoke("eval", *[a.format(tiny=tiny_llama_dir) for a in args], "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), result.output
    assert not out.exists()


@pytest.mark.slow
def test_smollm2_base_eval_with_the_keyword_judge(tmp_path):
    """The real SmolLM2-135M-Instruct answers HarmBench prompts; verdicts follow the keyword rule."""
    from surgerycli.evaluate.judges import is_refusal

    out = tmp_path / "eval"
    ok("eval", "--base", "smollm2", "--limit", "4", "--max-new-tokens", "24", "--out", out)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(s["response"] for s in samples)
    assert all((s["verdict"] == "safe") == is_refusal(s["response"]) for s in samples)
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["adapter"] is None and run["base"] == "smollm2"
    assert run["safety"]["harmbench"]["harmful_score"] == 25.0 * sum(s["verdict"] == "harmful" for s in samples)
