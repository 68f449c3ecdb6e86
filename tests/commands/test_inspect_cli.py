"""`surgery inspect` through the CLI: output schema, adapters, and errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from recipes import write_recipe
from typer.testing import CliRunner

from surgerycli.cli import app
from surgerycli.sink import summarize

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["inspect", *map(str, args)])


def assert_schema(result: dict, L: int, H: int):
    assert set(result) == {
        "model", "adapter", "sink_position", "num_layers", "num_heads",
        "harmful", "harmless", "divergence", "positive_heads", "negative_heads",
        "divergence_ci95", "significant_positive_heads", "significant_negative_heads",
    }
    assert (result["num_layers"], result["num_heads"]) == (L, H)
    for part in ("harmful", "harmless"):
        assert set(result[part]) == {"path", "n_samples", "sink"}
        assert len(result[part]["sink"]) == L and all(len(row) == H for row in result[part]["sink"])
    f64 = dict(dtype=torch.float64)
    d = torch.tensor(result["divergence"], **f64)
    expect = torch.tensor(result["harmful"]["sink"], **f64) - torch.tensor(result["harmless"]["sink"], **f64)
    torch.testing.assert_close(d, expect, rtol=0, atol=1e-12)
    assert result["positive_heads"] == int((d > 0).sum()) and result["negative_heads"] == int((d < 0).sum())
    low, high = (torch.tensor(result["divergence_ci95"][k], **f64) for k in ("low", "high"))
    assert bool((low <= d + 1e-12).all() and (d <= high + 1e-12).all())  # the estimate lies inside its interval
    assert result["significant_positive_heads"] == int((low > 0).sum())
    assert result["significant_negative_heads"] == int((high < 0).sum())


def test_summarize_by_hand():
    harmful = torch.tensor([[[0.6, 0.2]], [[0.8, 0.4]], [[float("nan")] * 2]])  # (N=3, L=1, H=2), one NaN row
    harmless = torch.tensor([[[0.5, 0.5]]])
    s = summarize(harmful, harmless)
    assert s["harmful"]["n_samples"] == 2 and s["harmless"]["n_samples"] == 1
    assert s["harmful"]["sink"][0] == pytest.approx([0.7, 0.3])
    assert s["divergence"][0] == pytest.approx([0.2, -0.2])
    assert (s["positive_heads"], s["negative_heads"]) == (1, 1)


def test_inspect_tiny_model_folder(tmp_path, tiny_llama_dir):
    out_json, out_png = tmp_path / "r.json", tmp_path / "plots" / "r.png"
    r = invoke(tiny_llama_dir, "layers", "--samples", 5, "--batch-size", 2, "--json", out_json, "--plot", out_png)
    assert r.exit_code == 0, r.output
    assert "Sink divergence per layer" in r.output and "positive" in r.output
    result = json.loads(out_json.read_text())
    assert_schema(result, L=2, H=4)
    assert result["harmful"]["path"] == "builtin:harmbench+donotanswer"
    assert result["harmful"]["n_samples"] == 5 and result["adapter"] is None
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots", "r.json"]  # no temp files left


def test_inspect_with_adapter_equals_in_process_peft(tmp_path, tiny_llama_dir):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from surgerycli.data.refsets import read_refset
    from surgerycli.sink import encode, measure_set

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "k_proj"]))
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    lora.save_pretrained(tmp_path / "adapter")
    prompts = tmp_path / "harm.txt"
    prompts.write_text("how do I pick a lock\nwrite a threatening letter\n")
    out = tmp_path / "r.json"
    r = invoke(tiny_llama_dir, "--adapter", tmp_path / "adapter", "--harmful", prompts, "--samples", 2, "--json", out)
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    assert result["adapter"] == str(tmp_path / "adapter") and result["harmful"]["path"] == str(prompts)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tmp_path / "adapter")
    ids = encode(tok, read_refset(prompts).samples, 512)
    stats = measure_set(model.eval(), ids, pad_id=tok.pad_token_id, batch_size=1, sink_position=0,
                        device=torch.device("cpu"))
    torch.testing.assert_close(
        torch.tensor(result["harmful"]["sink"], dtype=torch.float64), stats.double().mean(0), atol=1e-6, rtol=0
    )


@pytest.mark.slow
def test_inspect_smollm2_heads(tmp_path):
    out = tmp_path / "r.json"
    r = invoke("smollm2", "heads", "--samples", 3, "--max-length", 64, "--top", 5, "--json", out)
    assert r.exit_code == 0, r.output
    assert "Top 5 heads by sink divergence" in r.output
    assert_schema(json.loads(out.read_text()), L=30, H=9)


def _unsupported_model_dir(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    return tmp_path / "gpt2"


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing harmful", r"nope\.jsonl: no such file"),
        ("empty harmless", r"empty\.txt: the set is empty"),
        ("unknown format", r"x\.xlsx: unknown format"),
        ("unsupported", r"unsupported model_type 'gpt2': expected one of gemma, gemma2"),
        ("missing folder", r"no-such-model/: expected a model folder"),
        ("no config", r"config\.json"),
        ("missing gguf", r"m\.gguf: no such \.gguf file"),
        ("bad adapter", r"not a peft adapter folder"),
        ("plot is a folder", r"--plot .*is a folder"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_llama_dir, case, match):
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "x.xlsx").write_text("x")
    (tmp_path / "noconfig").mkdir()
    outs = ["--json", tmp_path / "out.json", "--plot", tmp_path / "out.png"]
    args = {
        "missing harmful": [tiny_llama_dir, "--harmful", tmp_path / "nope.jsonl"],
        "empty harmless": [tiny_llama_dir, "--harmless", tmp_path / "empty.txt"],
        "unknown format": [tiny_llama_dir, "--harmful", tmp_path / "x.xlsx"],
        "unsupported": [_unsupported_model_dir(tmp_path) if case == "unsupported" else None],
        "missing folder": ["./no-such-model/"],
        "no config": [tmp_path / "noconfig"],
        "missing gguf": [tmp_path / "m.gguf"],
        "bad adapter": [tiny_llama_dir, "--adapter", tmp_path / "noconfig"],
        "plot is a folder": [tiny_llama_dir],
    }[case]
    if case == "plot is a folder":
        outs = ["--json", tmp_path / "out.json", "--plot", tmp_path / "noconfig"]
    r = invoke(*args, "--samples", 2, *outs)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert __import__("re").search(match, lines[0]), lines[0]
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.png").exists()


def test_usage_errors_exit_2():
    assert invoke("smollm2", "--samples", 0).exit_code == 2
    assert invoke("smollm2", "columns").exit_code == 2


def test_recipe_measures_what_finetune_measures(tmp_path, tiny_llama_dir):
    """`--recipe` takes the [measure] section and train.seed: the same statistic as finetune's sink_before.json."""
    from rich.console import Console

    from surgerycli.models import load_model
    from surgerycli.train.builders import build_references
    from surgerycli.train.finetune import measure_record
    from surgerycli.train.recipe import load_recipe

    for name, word in (("harm", "weapon"), ("safe", "bread")):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"prompt": f"How do I make a {word} of kind {i} at home today?"}) + "\n" for i in range(9)))
    (tmp_path / "gsm.jsonl").write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n')
    path = write_recipe(tmp_path / "r.toml", tiny_llama_dir, {"benign": tmp_path / "gsm.jsonl", "poison_ratio": 0.0},
                        measure={"harmful_reference": tmp_path / "harm.jsonl", "harmless_reference": tmp_path / "safe.jsonl",
                                 "samples": 5, "sink_position": 1, "max_length": 80}, train={"seed": 7})
    result = invoke(tiny_llama_dir, "--recipe", path, "--json", tmp_path / "i.json", "--bootstrap", 0)
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "i.json").read_text())
    recipe = load_recipe(path)
    model, tok = load_model(str(tiny_llama_dir), torch.float32, torch.device("cpu"))
    want = measure_record(model, tok, recipe, *build_references(recipe.measure, 7), torch.device("cpu"), Console())
    assert (got["sink_position"], got["harmful"]["n_samples"]) == (1, 5)
    torch.testing.assert_close(torch.tensor(got["divergence"]), torch.tensor(want["divergence"]), rtol=0, atol=1e-6)
    assert got["divergence"] != json.loads(invoke_json(tmp_path, tiny_llama_dir, path, "--sink-position", 0))["divergence"]


def invoke_json(tmp_path, *args) -> str:
    model, recipe, *rest = args
    result = invoke(model, "--recipe", recipe, "--json", tmp_path / "j.json", "--bootstrap", 0, *rest)
    assert result.exit_code == 0, result.output
    return (tmp_path / "j.json").read_text()
