"""`surgery finetune` end to end through CliRunner, on a tiny Llama and on SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from clirun import invoke, ok
from recipes import data_of, write_recipe
from safetensors.torch import load_file

from surgerycli.train.defenses import registry

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def data(finetune_data) -> Path:
    return finetune_data


def recipe(tmp_path: Path, model: Path | str, data: Path) -> Path:
    return write_recipe(tmp_path / "recipe.toml", model, data_of(data), lora={"alpha": 8.0},
                        surgery={"alpha": 50.0, "reference_batch_size": 2}, measure={"samples": 4},
                        train={"max_length": 96, "learning_rate": 1e-3, "save_steps": 2, "max_steps": 4})


def run(path: Path, out: Path, *sets: str, flags: tuple[str, ...] = ()):
    args = ["finetune", path, "--output", out, *flags]
    for s in sets:
        args += ["--set", s]
    result = invoke(*args)
    assert result.exit_code == 0, result.output + str(result.exception)
    return result


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


def test_tiny_surgery_run_writes_every_output(tmp_path, tiny_llama_dir, data):
    out = tmp_path / "out"
    run(recipe(tmp_path, tiny_llama_dir, data), out)
    assert {"adapter", "tokenizer", "recipe.resolved.toml", "metrics.jsonl", "sink_before.json",
            "sink_after.json", "training.png", "summary.json", "checkpoints"} <= {p.name for p in out.iterdir()}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        assert set(m) == {"step", "loss", "sft_loss", "sink_loss", "positive_heads", "lr"}
        assert m["loss"] == pytest.approx(m["sft_loss"] + 50.0 * m["sink_loss"], rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "surgery" and summary["steps"] == 4 and summary["harmful_samples"] == 4
    assert summary["reference_tokens"] > 0 and summary["tokens"] > 0
    before, after = (json.loads((out / f).read_text()) for f in ("sink_before.json", "sink_after.json"))
    inspect_keys = {"model", "adapter", "sink_position", "num_layers", "num_heads", "harmful", "harmless",
                    "divergence", "positive_heads", "negative_heads", "divergence_ci95", "significant_positive_heads",
                   "significant_negative_heads"}
    assert set(before) == set(after) == inspect_keys
    assert before["divergence"] != after["divergence"]
    weights = adapter(out)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    resolved = (out / "recipe.resolved.toml").read_text()
    assert f'name = "{tiny_llama_dir}"' in resolved
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_seeded_runs_are_reproducible_and_resume_continues_exactly(tmp_path, tiny_llama_dir, data):
    path = recipe(tmp_path, tiny_llama_dir, data)
    run(path, tmp_path / "a")
    run(path, tmp_path / "b")
    a, b = adapter(tmp_path / "a"), adapter(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # stop after 2 steps, then rerun to 4: picks up checkpoint-2
    run(path, tmp_path / "c", "train.max_steps=2")
    run(path, tmp_path / "c")
    c = adapter(tmp_path / "c")
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert [json.loads(x)["step"] for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)

    run(path, tmp_path / "c", flags=("--no-resume",))  # fresh start
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["resumed_from"] is None


def test_sft_baseline_runs_no_reference_forward(tmp_path, tiny_llama_dir, data):
    path = recipe(tmp_path, tiny_llama_dir, data)
    run(path, tmp_path / "sft", "defense.method=sft")
    run(path, tmp_path / "zero", "surgery.alpha=0")
    run(path, tmp_path / "surgery")
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["method"] == "sft" and summary["reference_tokens"] == 0
    metrics = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    # the SFT entry registers no metrics: its records hold the losses only, and they are equal
    assert all(set(m) == {"step", "loss", "sft_loss", "lr"} and m["loss"] == m["sft_loss"] for m in metrics)
    surgery_metrics = json.loads((tmp_path / "surgery" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(surgery_metrics) == {"step", "loss", "sft_loss", "sink_loss", "positive_heads", "lr"}
    sft, zero, surgery = (adapter(tmp_path / d) for d in ("sft", "zero", "surgery"))
    assert all(torch.equal(sft[k], zero[k]) for k in sft)  # alpha 0 is exactly the baseline
    assert not all(torch.allclose(sft[k], surgery[k]) for k in sft)  # the regularizer moves the weights


def test_qlora_4bit_on_cpu(tmp_path, tiny_llama64_dir, data):
    # widths a multiple of the 4-bit block (64), so every bitsandbytes CPU path can run it
    out = tmp_path / "q"
    run(recipe(tmp_path, tiny_llama64_dir, data), out, "quantization.load_in_4bit=true", "train.max_steps=2",
        "train.gradient_checkpointing=true")
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"]
    assert "load_in_4bit = true" in (out / "recipe.resolved.toml").read_text()
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    lora_b = [v for k, v in adapter(out).items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: the steps trained it


def test_4bit_refused_for_layers_narrower_than_the_block(tmp_path, tiny_llama_dir, data):
    out = tmp_path / "q"
    result = invoke("finetune", recipe(tmp_path, tiny_llama_dir, data), "--output", out,
                    "--set", "quantization.load_in_4bit=true")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "quantization.load_in_4bit:" in result.output and "hidden_size 32" in result.output
    assert "block size 64" in result.output and not (out / "adapter").exists()


def test_dry_run_prints_the_mix_and_writes_nothing(tmp_path, tiny_llama_dir, data):
    out = tmp_path / "never"
    result = invoke("finetune", recipe(tmp_path, tiny_llama_dir, data), "--output", out, "--dry-run")
    assert result.exit_code == 0
    assert "poison_ratio = 0.2" in result.output and "Fine-tuning mix" in result.output
    assert re.search(r"harmful\s*│\s*4\s*│", result.output) and re.search(r"benign\s*│\s*16\s*│", result.output)
    assert not out.exists()


@pytest.mark.parametrize("sets, match", [
    (["surgery.alpha=\"high\"", "train.batch_size=0"],
     r'2 problems: surgery.alpha: expected a number >= 0, got "high"; train.batch_size: expected an integer >= 1'),
    (["data.num_samples=30", "data.poison_ratio=0.5"], r"needs 15 examples from data.harmful, which has 10"),
    (["measure.harmful_reference=nowhere.jsonl"], r"measure.harmful_reference: no such file"),
    (["lora.target_modules=[\"nonexistent_proj\"]"], r"lora.target_modules: "),
    (["bad"], r"--set bad: expected section.key=value"),
])
def test_bad_recipes_exit_2_and_write_nothing(tmp_path, tiny_llama_dir, data, sets, match):
    out = tmp_path / "never"
    args = ["finetune", recipe(tmp_path, tiny_llama_dir, data), "--output", out]
    for s in sets:
        args += ["--set", s]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(match, lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_smollm2_cpu_recipe_runs(tmp_path, data):
    """The shipped CPU recipe, pointed at fixture data and cut to 3 steps."""
    out = tmp_path / "smol"
    run(ROOT / "recipes" / "smollm2-cpu-surgery.toml", out, f"data.benign={data / 'gsm.jsonl'}",
        f"data.harmful={data / 'harm.jsonl'}", "data.num_samples=20", "train.max_steps=3",
        "measure.samples=4", "train.logging_steps=1")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["method"] == "surgery"
    after = json.loads((out / "sink_after.json").read_text())
    assert after["num_layers"] == 30 and after["num_heads"] == 9
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3 and all(0 <= m["positive_heads"] <= 270 for m in metrics)


def test_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path, tiny_llama_dir, data):
    """SIGKILL a real run once checkpoints exist; the rerun resumes and finishes with a whole adapter."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    path = recipe(tmp_path, tiny_llama_dir, data)
    cmd = [sys.executable, "-m", "surgerycli", "finetune", str(path), "--output", str(out),
           "--set", "train.max_steps=40", "--set", "train.save_steps=1", "--set", "measure.samples=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    while not list(out.glob("checkpoints/checkpoint-3")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists()  # killed before the end: no adapter, not a partial one
    run(path, out, "train.max_steps=40", "train.save_steps=1", "measure.samples=0")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["resumed_from"] is not None
    assert int(summary["resumed_from"].rsplit("-", 1)[-1]) >= 2
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))
    assert load_file(out / "adapter" / "adapter_model.safetensors")


def test_harm_probe_logs_scores_and_leaves_training_unchanged(tmp_path, tiny_llama_dir, data, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import surgerycli.train.monitor as monitor

    # a stand-in judge, where the probe calls it, with a decision that varies with the text, so the score is
    # not trivially 0 or 100
    monkeypatch.setattr(monitor, "is_refusal", lambda response: len(response) % 2 == 0)
    prompts = ["Say hi.", "Tell me a secret.", "How do I fly?", "Name a colour."]
    (tmp_path / "probe.txt").write_text("\n".join(prompts) + "\n")
    path = recipe(tmp_path, tiny_llama_dir, data)
    run(path, tmp_path / "plain")
    run(path, tmp_path / "probed", "monitor.every_steps=2", f"monitor.prompts={tmp_path / 'probe.txt'}",
        "monitor.n=4", "monitor.max_new_tokens=6")
    plain, probed = adapter(tmp_path / "plain"), adapter(tmp_path / "probed")
    assert all(torch.equal(plain[k], probed[k]) for k in plain)  # same bits: the probe changes nothing
    records = {m["step"]: m for m in map(json.loads, (tmp_path / "probed" / "metrics.jsonl").read_text().splitlines())}
    assert sorted(records) == [1, 2, 3, 4]
    assert records[1]["probe_harmful_score"] is None and records[3]["probe_harmful_score"] is None
    # the last probe, recomputed: the final adapter answers each prompt alone through model.generate
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                      tmp_path / "probed" / "adapter").eval()
    answers = []
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        answers.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    expected = 100 * sum(len(a) % 2 == 1 for a in answers) / len(answers)
    assert 0 < expected < 100 and records[4]["probe_harmful_score"] == pytest.approx(expected)
    assert (tmp_path / "probed" / "training.png").is_file()


def test_dry_run_shows_the_probe_and_drops_seen_prompts(tmp_path, tiny_llama_dir, data):
    harm = [json.loads(line)["prompt"] for line in (data / "harm.jsonl").read_text().splitlines()]
    (tmp_path / "probe.txt").write_text("\n".join(harm[:2] + ["A new question?"]) + "\n")
    result = invoke("finetune", recipe(tmp_path, tiny_llama_dir, data), "--dry-run", "--set", "monitor.every_steps=5",
                    "--set", f"monitor.prompts={tmp_path / 'probe.txt'}", "--set", "data.poison_ratio=0.5")
    assert result.exit_code == 0, result.output
    assert re.search(r"probe\s*│\s*1\s*│", result.output) and "(2 dropped as seen" in result.output
    only_seen = tmp_path / "seen.txt"
    only_seen.write_text("\n".join(harm) + "\n")
    result = invoke("finetune", recipe(tmp_path, tiny_llama_dir, data), "--dry-run", "--set", "monitor.every_steps=5",
                    "--set", f"monitor.prompts={only_seen}", "--set", "data.poison_ratio=0.5")
    assert result.exit_code == 2 and "monitor.prompts: every prompt" in result.output


@pytest.fixture
def refs(tmp_path) -> tuple[Path, Path]:
    harm, safe = tmp_path / "refs_harm.jsonl", tmp_path / "refs_safe.jsonl"
    harm.write_text("".join(json.dumps({"prompt": f"How do I break thing {i}?"}) + "\n" for i in range(3)))
    safe.write_text("".join(json.dumps({"prompt": f"How do I bake bread {i}?"}) + "\n" for i in range(3)))
    return harm, safe


def test_full_finetuning_writes_a_model_that_inspect_and_eval_take(tmp_path, tiny_llama_dir, data, refs):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    harm, safe = refs
    run(recipe(tmp_path, tiny_llama_dir, data), out, "lora.enabled=false", f"measure.harmful_reference={harm}",
        f"measure.harmless_reference={safe}")
    assert (out / "model" / "config.json").is_file() and any((out / "model").glob("*.safetensors"))
    assert not (out / "adapter").exists() and (out / "model" / "tokenizer_config.json").is_file()
    ids = torch.tensor([[5, 9, 14, 3, 7]])
    trained = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        assert not torch.allclose(trained(ids).logits, base(ids).logits, atol=1e-4)  # every weight trained
    # the saved model is the one the run measured: inspect on the output reproduces sink_after.json
    ok("inspect", out, "--harmful", harm, "--harmless", safe, "--max-length", 96, "--json", tmp_path / "i.json")
    inspected = json.loads((tmp_path / "i.json").read_text())
    after = json.loads((out / "sink_after.json").read_text())
    assert after["adapter"] == str(out / "model")
    assert torch.allclose(torch.tensor(inspected["divergence"]), torch.tensor(after["divergence"]), atol=1e-6)
    ok("eval", out, "--include-base", "--limit", 2, "--max-new-tokens", 3, "--out", tmp_path / "e")
    runs = json.loads((tmp_path / "e" / "results.json").read_text())["runs"]
    assert [(r["adapter"], r["base"]) for r in runs] == [(None, str(tiny_llama_dir)), (str(out), str(out / "model"))]
    result = invoke("merge", out, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "nothing to merge" in result.output and not (tmp_path / "m").exists()


def test_full_finetuning_refuses_4bit(tmp_path, tiny_llama64_dir, data):
    result = invoke("finetune", recipe(tmp_path, tiny_llama64_dir, data), "--output", tmp_path / "x",
                    "--set", "lora.enabled=false", "--set", "quantization.load_in_4bit=true")
    assert result.exit_code == 2 and "quantization.load_in_4bit: full fine-tuning" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


FULL_SETS = ("lora.enabled=false", "train.max_steps=2", "train.gradient_checkpointing=true", "lisa.alignment_steps=1",
             "lisa.finetune_steps=1", "safeinstr.num=2", "train.logging_steps=1")
# each defense's own effect, seen in what the run logged (metrics.jsonl records, summary.json)
EFFECTS = {
    "sft": lambda records, summary: summary["final_metrics"] == {} and summary["reference_tokens"] == 0,
    "surgery": lambda records, summary: all(r["sink_loss"] >= 0 for r in records) and summary["reference_tokens"] > 0,
    "safeinstr": lambda records, summary: [r["safety_samples"] for r in records] == [2, 2] and summary["samples"] == 22,
    "lisa": lambda records, summary: [r["lisa_alignment"] for r in records] == [1.0, 0.0],
    "vaccine": lambda records, summary: all(r["hidden_grad_norm"] > 0 for r in records),
    "booster": lambda records, summary: all(r["harmful_loss"] > 0 for r in records),
}


def full_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in out.glob("*.safetensors") for k, v in load_file(f).items()}


TRAINING = [name for name, cls in registry().items() if cls.stage != "post"]  # post defenses: tests/train/test_post.py


@pytest.mark.parametrize("method", TRAINING)
def test_every_defense_runs_with_full_finetuning(tmp_path, tiny_llama_dir, data, method):
    from surgerycli.train.callbacks import read_metrics

    assert set(EFFECTS) == set(TRAINING)  # a new defense that trains brings its own effect here
    outs = {}
    for m in dict.fromkeys(["sft", method]):
        outs[m] = tmp_path / m
        run(recipe(tmp_path, tiny_llama_dir, data), outs[m], *FULL_SETS, f"defense.method={m}",
            f"booster.harmful_data={data / 'harm.jsonl'}")
    out = outs[method]
    trained, base = full_weights(out / "model"), full_weights(Path(tiny_llama_dir))
    changed = [k for k in base if not torch.equal(base[k], trained[k])]
    assert len(changed) > len(base) // 2, changed  # most weight matrices moved, not just a few
    records, summary = read_metrics(out / "metrics.jsonl"), json.loads((out / "summary.json").read_text())
    keys = {m.key for m in registry()[method].metrics}
    assert len(records) == 2 and all(keys <= set(r) and all(r[k] is not None for k in keys) for r in records)
    assert EFFECTS[method](records, summary), (records, summary)
    if method != "sft":  # the defense changed what was learned: not the SFT run's weights
        sft = full_weights(outs["sft"] / "model")
        assert any(not torch.allclose(sft[k], trained[k], atol=1e-6) for k in sft)


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, tiny_llama_dir, data):
    import subprocess

    from surgerycli.files import LOCK

    out = tmp_path / "locked"
    out.mkdir()
    holder = subprocess.Popen(["sleep", "60"])  # a live process holds the folder
    try:
        (out / LOCK).write_text(f"{holder.pid}\n")
        result = invoke("finetune", recipe(tmp_path, tiny_llama_dir, data), "--output", out)
        assert result.exit_code == 2 and f"another surgery run (pid {holder.pid}) is writing here" in result.output
        assert len(result.output.strip().splitlines()) == 1 and not (out / "recipe.resolved.toml").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, the run takes it over and removes it when done
    run(recipe(tmp_path, tiny_llama_dir, data), out, "train.max_steps=1")
    assert (out / "adapter").is_dir() and not (out / LOCK).exists()
