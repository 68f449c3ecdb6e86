"""`model.chat_template` / `--chat-template`: one Jinja file replaces the tokenizer's template for training,
references, inspect and eval; `--dry-run` shows a rendered training example with its masked part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirun import invoke, ok
from recipes import write_recipe

TEMPLATE = ("{% for m in messages %}[[{{ m['role'] }}]] {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}[[assistant]] {% endif %}")


@pytest.fixture()
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("How do I do bad thing 1?\nHow do I do bad thing 2?\n")
    return path


@pytest.fixture()
def template(tmp_path):
    path = tmp_path / "tpl.jinja"
    path.write_text(TEMPLATE)
    return path


def recipe(tmp_path, model, data, template: Path | None) -> Path:
    return write_recipe(tmp_path / "r.toml", model, {"benign": data / "gsm.jsonl", "benign_format": "gsm8k",
                                                     "poison_ratio": 0.0, "num_samples": 8},
                        model={"chat_template": template}, defense={"method": "sft"},
                        train={"max_length": 96, "max_steps": 1, "logging_steps": 10})


def test_dry_run_shows_the_template_and_the_mask(tmp_path, tiny_llama_dir, finetune_data, template):
    result = ok("finetune", recipe(tmp_path, tiny_llama_dir, finetune_data, template), "--dry-run")
    text = result.output
    start = text.rindex("<<<")  # the example (the rule above it names the markers too)
    end = text.index(">>>", start)
    masked, learned = text[start + 3:end], text[end + 3:]
    assert "[[user]] Tom has" in masked and masked.rstrip().endswith("[[assistant]]")
    assert "The final answer is:" in learned and "[[user]]" not in learned
    # without the override the tokenizer's own template renders it: no [[...]] markers
    plain = ok("finetune", recipe(tmp_path, tiny_llama_dir, finetune_data, None), "--dry-run").output
    assert "<<<" in plain and "[[user]]" not in plain


def test_training_uses_the_template_and_eval_follows_it(tmp_path, tiny_llama_dir, finetune_data, template, prompts):
    out = tmp_path / "out"
    ok("finetune", recipe(tmp_path, tiny_llama_dir, finetune_data, template), "--output", out)
    from surgerycli.models import saved_chat_template

    assert saved_chat_template(out / "tokenizer") == TEMPLATE
    ok("eval", out, "--safety-data", f"harmbench={prompts}", "--limit", 2, "--max-new-tokens", 2,
       "--out", tmp_path / "ev")
    inputs = [json.loads(line)["input"] for line in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert inputs and all(i.startswith("[[user]] ") and i.rstrip().endswith("[[assistant]]") for i in inputs)


def test_eval_and_inspect_take_a_template(tmp_path, tiny_llama_dir, template, prompts):
    ok("eval", "--base", tiny_llama_dir, "--chat-template", template, "--safety-data",
       f"harmbench={prompts}", "--limit", 2, "--max-new-tokens", 2, "--out", tmp_path / "ev")
    first = json.loads((tmp_path / "ev" / "samples.jsonl").read_text().splitlines()[0])
    assert first["input"].startswith("[[user]] How do I do bad thing")
    a = ok("inspect", tiny_llama_dir, "--samples", 3, "--bootstrap", 0, "--json", tmp_path / "a.json")
    b = ok("inspect", tiny_llama_dir, "--samples", 3, "--bootstrap", 0, "--json", tmp_path / "b.json", "--chat-template", template)
    assert a.exit_code == b.exit_code == 0
    da = json.loads((tmp_path / "a.json").read_text())["divergence"]
    db = json.loads((tmp_path / "b.json").read_text())["divergence"]
    assert da != db  # other tokens, other statistics


def test_a_broken_template_is_one_line(tmp_path, tiny_llama_dir, finetune_data):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] }")
    result = invoke("inspect", tiny_llama_dir, "--chat-template", bad)
    assert result.exit_code == 2 and "--chat-template" in result.output and "not a valid Jinja template" in result.output
    result = invoke("finetune", recipe(tmp_path, tiny_llama_dir, finetune_data, bad), "--dry-run")
    assert result.exit_code == 2 and "model.chat_template: not a valid Jinja template" in result.output, result.output
