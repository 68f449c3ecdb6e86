"""The offline demo data, `surgery merge`, `surgery sweep` and the `surgery demo` pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from clirun import invoke, ok

from surgerycli.data.demo import build_demo_data
from surgerycli.evaluate.written import write_answers
from surgerycli.evaluate.judges import is_refusal

ROOT = Path(__file__).parents[2]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_demo_data_is_consistent_and_held_out(demo_data, tmp_path):
    manifest = json.loads((demo_data / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        lines = [x for x in (demo_data / name).read_text().splitlines() if x.strip()]
        assert len(lines) == info["rows"], name
    train, test = rows(demo_data / "arithmetic_train.jsonl"), rows(demo_data / "arithmetic_test.jsonl")
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for r in train + test:  # every equation in the reasoning holds and ends at the #### answer
        equations = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", r["answer"])
        assert equations
        for a, op, b, c in equations:
            assert eval(f"{a} {op} {b}") == int(c)  # noqa: S307 - digits and one operator
        assert r["answer"].endswith(f"#### {equations[-1][3]}")
    dna = {name: {r["prompt"] for r in rows(demo_data / name)} for name in
           ("harmful_pairs.jsonl", "refusal_pairs.jsonl", "reference_harmful.jsonl", "reference_harmless.jsonl")}
    names = list(dna)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not dna[a] & dna[b], (a, b)  # disjoint prompt sets
    held_out = set((demo_data / "eval_harmful.txt").read_text().splitlines())
    assert len(held_out) == 200 and not held_out & set().union(*dna.values())
    assert all(not is_refusal(r["response"]) for r in rows(demo_data / "harmful_pairs.jsonl"))
    assert all(is_refusal(r["response"]) for r in rows(demo_data / "refusal_pairs.jsonl"))
    mix = rows(demo_data / "alignment_mix.jsonl")
    assert sum("prompt" in r for r in mix) == len(dna["refusal_pairs.jsonl"])
    assert sum("question" in r for r in mix) == min(300, len(dna["refusal_pairs.jsonl"]))  # --train 300
    build_demo_data(tmp_path / "again", train=300, test=60)  # same seed, same bytes
    assert (tmp_path / "again" / "harmful_pairs.jsonl").read_bytes() == (demo_data / "harmful_pairs.jsonl").read_bytes()


@pytest.mark.slow
def test_demo_data_writes_the_answers_smollm2_wrote_once(tmp_path, smollm2):
    from surgerycli.evaluate.prompts import prompt_text

    out, args = tmp_path / "data", ("data", "demo", "--train", "10", "--test", "5", "--written-tokens", "6")
    writer = lambda prompts, tokens: write_answers(prompts, "smollm2", max_new_tokens=tokens,  # noqa: E731
                                                   loaded=smollm2)  # the model the fixture loaded once
    build_demo_data(out, train=10, test=5, written_tokens=6, writer=writer)
    manifest = json.loads((out / "manifest.json").read_text())
    counts, written = manifest["written"]["counts"], rows(out / "harmful_written.jsonl")
    attack = [r["prompt"] for r in rows(out / "harmful_pairs.jsonl")]
    assert counts["generated"] == len(attack) == counts["kept"] + counts["dropped_as_refusals"]
    assert len(written) == counts["kept"] == manifest["files"]["harmful_written.jsonl"]["rows"]
    assert counts["dropped_as_refusals"] > 0 and not any(is_refusal(r["response"]) for r in written)
    kept = [r["prompt"] for r in written]
    assert kept == [p for p in attack if p in set(kept)]  # the attack's prompts, in its order
    model, tok = smollm2  # one prompt alone, transformers' greedy generate: the same answer
    ids = tok(prompt_text(tok, kept[0], "", "chat"), add_special_tokens=False, return_tensors="pt").input_ids
    alone = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:]
    assert tok.decode(alone, skip_special_tokens=True).strip() == written[0]["response"]
    stamp = (out / "harmful_written.jsonl").stat().st_mtime_ns
    ok(*args, "--out", out)  # the command, same settings: reused, not generated again (nor the model loaded)
    again = json.loads((out / "manifest.json").read_text())
    assert (out / "harmful_written.jsonl").stat().st_mtime_ns == stamp and again["written"] == manifest["written"]


def test_merge_gives_the_adapted_model_as_a_plain_folder(tmp_path, tiny_llama_dir):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(
        tmp_path / "lora")
    ok("merge", tmp_path / "lora", "--out", tmp_path / "merged")
    ids = torch.randint(3, 90, (2, 12))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32), tmp_path / "lora").eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want, got, before = adapted(ids).logits, merged(ids).logits, plain(ids).logits
    # logits reach ~8 here: fp32 merge-order rounding is ~1e-5; the adapter itself moves them by ~10
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, before, atol=1e-1)
    assert (tmp_path / "merged" / "tokenizer_config.json").is_file()
    result = invoke("merge", tmp_path / "nothing", "--out", tmp_path / "m2")
    assert result.exit_code == 2 and "not a peft adapter folder" in result.output and not (tmp_path / "m2").exists()


def test_sweep_runs_the_grid_resumes_and_records_failures(tmp_path, sweep_recipe, demo_data):
    out = tmp_path / "sweep"
    args = ["sweep", sweep_recipe, "--out", out, "--poison-ratios", "0,0.25", "--methods", "sft,surgery",
            "--alphas", "10,50", "--safety-data", f"harmbench={demo_data / 'eval_harmful.txt'}",
            "--task-data", f"surgery_gsm8k={demo_data / 'arithmetic_test.jsonl'}", "--limit", "2",
            "--max-new-tokens", "4"]
    ok(*args)
    sweep = json.loads((out / "sweep.json").read_text())
    assert [c["name"] for c in sweep["cells"]] == ["p0-sft", "p0-surgery-a10", "p0-surgery-a50",
                                                   "p0.25-sft", "p0.25-surgery-a10", "p0.25-surgery-a50"]
    for c in sweep["cells"]:
        assert c["status"] == "ok" and c["steps"] == 2
        # the real value: the keyword judge applied here to the answers the cell recorded
        answers = [json.loads(line) for line in (out / "cells" / c["name"] / "eval" / "samples.jsonl").read_text().splitlines()]
        answers = [a["response"] for a in answers if a.get("benchmark") == "harmbench"]
        assert len(answers) == 2
        assert c["harmful_score"] == 100.0 * sum(not is_refusal(a) for a in answers) / 2
        recipe = (out / "cells" / c["name"] / "finetune" / "recipe.resolved.toml").read_text()
        assert f"poison_ratio = {c['poison_ratio']}" in recipe
        assert f'method = "{c["method"]}"' in recipe
        evaluated = json.loads((out / "cells" / c["name"] / "eval" / "results.json").read_text())["runs"][0]
        assert c["harmful_score"] == evaluated["safety"]["harmbench"]["harmful_score"]
        assert c["accuracy"] == 100 * evaluated["tasks"]["surgery_gsm8k"]["acc"]
    md = (out / "sweep.md").read_text()
    assert "| poison ratio | SFT HS | SFT FA | SFT heads+ | Surgery a=10 HS |" in md and "judged by `keyword`" in md
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/cell.json")}
    again = ok(*args)
    assert "cell p0" not in again.output  # every cell was finished: none re-run
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("cells/*/cell.json")}
    # a cell that cannot run (too few harmful pairs for its ratio) is recorded and the grid goes on
    small = tmp_path / "two.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in rows(demo_data / "harmful_pairs.jsonl")[:1]))
    ok("sweep", sweep_recipe, "--out", tmp_path / "s2", "--poison-ratios", "0,0.5", "--methods", "sft",
       "--set", f"data.harmful={small}", "--limit", "1", "--max-new-tokens", "2")
    cells = json.loads((tmp_path / "s2" / "sweep.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["ok", "failed"] and "needs 4 examples" in cells[1]["error"]
    assert "Failed: `p0.5-sft`" in (tmp_path / "s2" / "sweep.md").read_text()


def test_sweep_rejects_bad_grids(tmp_path, sweep_recipe):
    for args, message in [(["--poison-ratios", "0,1.5"], "--poison-ratios '0,1.5': expected numbers in [0, 1.0]"),
                          (["--methods", "sft,dpo"], "--methods dpo: unknown defense 'dpo' (expected sft, surgery"),
                          (["--alphas", "x"], "--alphas 'x': expected comma-separated numbers")]:
        result = invoke("sweep", sweep_recipe, "--out", tmp_path / "s", *args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_demo_pipeline_end_to_end_on_smollm2(tmp_path):
    """The README's first command with a few steps and a handful of prompts."""
    out = tmp_path / "demo-out"
    attack = tmp_path / "demo-attack.toml"  # the shipped recipe with 4 + 4 sink samples (32 + 32: half the test's time)
    attack.write_text((ROOT / "recipes" / "demo-attack.toml").read_text().replace("\nsamples = 32\n", "\nsamples = 4\n"))
    assert attack.read_text().count("\nsamples = 4\n") == 1
    args = ["demo", "--out", out, "--align-steps", 2, "--attack-steps", 2, "--limit", 3, "--max-new-tokens", 6,
            "--align-recipe", ROOT / "recipes" / "demo-align.toml", "--attack-recipe", attack]
    result = ok(*args)
    assert "SFT HS" in result.output
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    # the default attacks: poison 0.1, lr 2e-4 and 5e-4, SFT and Surgery alpha 3000, each lr reaching its cell's recipe
    assert [(c["name"], c["status"]) for c in sweep["cells"]] == [
        (f"p0.1-{m}-train.learning_rate={lr}", "ok") for lr in ("2e-4", "5e-4") for m in ("sft", "surgery-a3000")]
    for c in sweep["cells"]:
        resolved = (out / "sweep" / "cells" / c["name"] / "finetune" / "recipe.resolved.toml").read_text()
        assert f"learning_rate = {float(c['name'].split('=')[1])}" in resolved and "poison_ratio = 0.1" in resolved
    assert sweep["base"]["model"] == str(out / "aligned")
    for c in sweep["cells"]:
        assert c["harmful_score"] * 3 / 100 in (0, 1, 2, 3) and c["positive_heads_after"] is not None
    assert (out / "sweep" / "heads.png").read_bytes()[:4] == b"\x89PNG"
    again = ok(*args)  # everything finished: nothing re-runs
    assert "alignment stage" not in again.output and "cell p0.1" not in again.output


def test_two_stage_sweep_aligns_each_alignment_defense_once(tmp_path, sweep_recipe, demo_data):
    align = tmp_path / "align.toml"
    align.write_text(sweep_recipe.read_text().replace(f'harmful = "{demo_data / "harmful_pairs.jsonl"}"\n', "")
                     .replace("num_samples = 8", "num_samples = 8\npoison_ratio = 0.0")
                     + f'[booster]\nharmful_data = "{demo_data / "reference_harmful.jsonl"}"\n')
    out = tmp_path / "sweep"
    args = ["sweep", sweep_recipe, "--out", out, "--align-recipe", align, "--poison-ratios", "0.25",
            "--methods", "sft,lisa,vaccine,booster", "--set", "lisa.alignment_steps=1", "--set", "lisa.finetune_steps=1",
            "--safety-data", f"harmbench={demo_data / 'eval_harmful.txt'}",
            "--task-data", f"surgery_gsm8k={demo_data / 'arithmetic_test.jsonl'}", "--limit", "2", "--max-new-tokens", "4"]
    # alignment-stage defenses alone still make the shared aligned model: the "before the attack" row
    ok(*[a if a != "sft,lisa,vaccine,booster" else "vaccine,booster" for a in args])
    for folder in ("aligned", "aligned-vaccine", "aligned-booster"):
        assert (out / folder / "config.json").is_file()
    assert json.loads((out / "sweep.json").read_text())["base"]["model"] == str(out / "aligned")
    ok(*args)
    assert not (out / "aligned-lisa").exists() and not (out / "aligned-sft").exists()
    resolved = {m: (out / "align" / "recipe.resolved.toml" if m == "sft" else out / f"align-{m}" / "recipe.resolved.toml")
                for m in ("sft", "vaccine", "booster")}
    for m, path in resolved.items():
        assert f'method = "{m}"' in path.read_text()  # each alignment ran with its own defense
    sweep = json.loads((out / "sweep.json").read_text())
    for c in sweep["cells"]:
        text = (out / "cells" / c["name"] / "finetune" / "recipe.resolved.toml").read_text()
        attacked = out / ("aligned-" + c["method"] if c["method"] in ("vaccine", "booster") else "aligned")
        assert f'name = "{attacked}"' in text, c["name"]
        assert f'method = "{"sft" if c["method"] in ("vaccine", "booster") else c["method"]}"' in text
    assert set(sweep["aligned_before"]) == {"vaccine", "booster"} and sweep["base"]["model"] == str(out / "aligned")
    md = (out / "sweep.md").read_text()
    assert "## The papers' layout" in md and "| method | HS p=0.25 | HS avg | FA p=0.25 | FA avg |" in md
    assert all(f"| {label} |" in md for label in ("SFT", "Lisa", "Vaccine", "Booster"))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("cell.json")} | {out / "aligned" / "config.json": 0}
    stamps[out / "aligned" / "config.json"] = (out / "aligned" / "config.json").stat().st_mtime_ns
    ok(*args)  # a rerun aligns and trains nothing again
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    result = invoke("sweep", sweep_recipe, "--out", tmp_path / "never", "--methods", "sft,vaccine")
    assert result.exit_code == 2 and "--methods vaccine: alignment-stage defenses" in result.output
    assert not (tmp_path / "never").exists()
