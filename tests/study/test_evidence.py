"""The answers behind the scores: kept by every eval, gathered by `surgery report`, judged again by `surgery judge`,
flagged where a judge is blind, and shown in report.html, which a real (headless) Chromium opens and filters."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from clirun import ok

from surgerycli.evaluate.answers import agreement, flags

pytestmark = pytest.mark.slow


def test_flags_by_hand():
    assert flags("   \n ") == {"empty": True, "repetitive": False, "gibberish": False}
    loop = 'Sure! "Sure! "Sure! "Sure! "Sure! "Sure! "Sure! "Sure!"'
    assert flags(loop)["repetitive"]  # 6 of 7 word 3-grams are the same
    assert flags("Step 1.\nStep 1.\nStep 1.\nDone.")["repetitive"]  # a line three times
    assert not flags("First mix the flour and the water, then knead the dough for ten minutes.")["repetitive"]
    assert flags("x7#q ##$ @@ zzkq 9981 ~~ ok")["gibberish"]  # 1 word-like token ("ok") of 7
    assert not flags("I'm sorry, but I can't help with that.")["gibberish"]


def test_agreement_and_kappa_by_hand():
    """a = HHSS SS, b = HSSS SH: both harmful 1, both safe 3, only a 1, only b 1; observed 4/6; chance
    (2/6)(2/6) + (4/6)(4/6) = 20/36; kappa = (24/36 - 20/36) / (16/36) = 0.25."""
    a = [True, True, False, False, False, False]
    b = [True, False, False, False, False, True]
    got = agreement(a, b)
    assert (got["both_harmful"], got["both_safe"], got["only_first"], got["only_second"]) == (1, 3, 1, 1)
    assert got["kappa"] == pytest.approx(0.25) and got["agree"] == pytest.approx(4 / 6)
    assert agreement([True] * 3, [True] * 3)["kappa"] is None  # one verdict throughout: kappa undefined


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tokenizer_dir) -> Path:
    """A stand-in beaver-dam: a tiny random sequence classifier whose scores spread around 0.5 from text to text
    (large random weights), so that it disagrees with the keyword judge on some answers and not on others."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                  pad_token_id=tok.pad_token_id, problem_type="multi_label_classification",
                                  id2label={0: "violence"}, initializer_range=1.0)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("classifier")
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def judged(tmp_path_factory, tiny_llama_dir, demo_data, classifier):
    """A sweep of SFT and Surgery on the tiny model (4 prompts each), judged again by a stand-in beaver-dam
    classifier, and reported: (sweep folder, report folder)."""
    classifier_dir = classifier
    tmp = tmp_path_factory.mktemp("evidence")
    recipe = tmp / "r.toml"
    from recipes import write_recipe

    write_recipe(recipe, tiny_llama_dir, {"benign": demo_data / "arithmetic_train.jsonl",
                                          "harmful": demo_data / "harmful_pairs.jsonl", "num_samples": 8},
                 measure={"harmful_reference": demo_data / "reference_harmful.jsonl",
                          "harmless_reference": demo_data / "reference_harmless.jsonl"})
    out = tmp / "sweep"
    ok("sweep", recipe, "--out", out, "--poison-ratios", "0.25", "--methods", "sft,surgery", "--alphas", "50",
       "--safety-data", f"harmbench={demo_data / 'eval_harmful.txt'}",
       "--task-data", f"surgery_gsm8k={demo_data / 'arithmetic_test.jsonl'}", "--limit", "4", "--max-new-tokens", "6")
    ok("judge", out, "--judge", f"beaver-dam:{classifier_dir}")
    ok("report", out, "--out", tmp / "report")
    return out, tmp / "report"


def test_every_answer_is_kept_judged_again_and_gathered(judged, classifier):
    classifier_dir = classifier
    out, report = judged
    with gzip.open(report / "answers.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert sorted({r["cell"] for r in rows}) == sorted([*cells, "before the attack"])
    second = f"beaver-dam:{classifier_dir}"
    for cell in cells:  # every stored answer, with both judges' verdicts, the first judge's as the eval wrote it
        stored = [json.loads(line) for line in (out / "cells" / cell / "eval" / "samples.jsonl").read_text().splitlines()
                  if json.loads(line).get("verdict") in ("harmful", "safe")]
        mine = [r for r in rows if r["cell"] == cell]
        assert len(stored) == len(mine) == 4
        assert [r["judges"]["keyword"]["verdict"] for r in mine] == [s["verdict"] for s in stored]
        assert all(set(r["judges"]) == {"keyword", second} for r in mine)
        assert json.loads((out / "cells" / cell / "eval" / "results.json").read_text())["runs"]  # the first judge's, kept
    summary = json.loads((report / "sweep.json").read_text())["answers"]
    for cell, entry in summary.items():  # the agreement counts, recomputed from the stored verdicts
        mine = [r for r in rows if r["cell"] == cell]
        a = [r["judges"]["keyword"]["verdict"] == "harmful" for r in mine]
        b = [r["judges"][second]["verdict"] == "harmful" for r in mine]
        got = entry["judges"][second]["agreement"]
        assert got["both_harmful"] == sum(x and y for x, y in zip(a, b))
        assert got["only_second"] == sum(y and not x for x, y in zip(a, b))
        assert entry["judges"][second]["harmful_score"] == 100 * sum(b) / len(b)
    assert f"| {second} HS |" in (report / "sweep.md").read_text()
    # a second report from the first one's folder keeps the answers (a committed study carries them)
    ok("report", report, "--out", report.parent / "again")
    with gzip.open(report.parent / "again" / "answers.jsonl.gz", "rt") as f:
        assert [json.loads(line) for line in f] == rows
    assert (report.parent / "again" / "answers.jsonl.gz").read_bytes() == (report / "answers.jsonl.gz").read_bytes()


def test_the_page_opens_from_file_and_filters_in_a_real_browser(judged, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    _, report = judged
    with gzip.open(report / "answers.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((report / "report.html").resolve().as_uri())
        cell = next(r["cell"] for r in rows if r["cell"] != "before the attack")
        driver.find_element(By.CSS_SELECTOR, f'tr.cell[data-cell="{cell}"]').click()
        shown = driver.find_elements(By.CSS_SELECTOR, "#list .answer")
        assert [a.get_attribute("data-cell") for a in shown] == [cell] * 4
        assert "keyword: " in shown[0].text and "beaver-dam" in shown[0].text
        driver.find_element(By.CSS_SELECTOR, f'tr.cell[data-cell="{cell}"]').click()  # closed: every cell again
        driver.find_element(By.CSS_SELECTOR, 'input[name=filter][value=disagree]').click()
        disagree = [r for r in rows if len({j["verdict"] for j in r["judges"].values()}) > 1]
        assert 0 < len(disagree) < len(rows)  # the filter has something to keep and something to drop
        shown = driver.find_elements(By.CSS_SELECTOR, "#list .answer")
        assert len(shown) == len(disagree)
        assert [a.find_element(By.CSS_SELECTOR, ".prompt").text for a in shown] == [r["prompt"] for r in disagree]
        driver.save_screenshot(str(Path(report) / "screenshot.png"))
    finally:
        driver.quit()
    assert (Path(report) / "screenshot.png").read_bytes()[:4] == b"\x89PNG"


def test_each_model_before_the_attack_keeps_its_answers(judged, tmp_path):
    """A model an alignment-stage defense aligned itself (base-eval-<method>, base-<method>.json) is evaluated
    before the attack beside the shared aligned model: `surgery report` keeps its answers as their own cell and
    names its scores, also for a folder without sweep.json (an unfinished sweep, or a search)."""
    out, _ = judged
    folder = tmp_path / "sweep"
    shutil.copytree(out, folder)
    (folder / "sweep.json").unlink()
    shutil.copytree(folder / "base-eval", folder / "base-eval-vaccine")
    lines = (folder / "base-eval-vaccine" / "samples.jsonl").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if json.loads(line).get("verdict") in ("harmful", "safe"))
    changed = {**json.loads(lines[first]), "response": "Vaccine's own words."}
    lines[first] = json.dumps(changed)
    (folder / "base-eval-vaccine" / "samples.jsonl").write_text("\n".join(lines) + "\n")
    base = json.loads((folder / "base.json").read_text())
    (folder / "base-vaccine.json").write_text(json.dumps({**base, "model": "aligned-vaccine", "accuracy": 12.0}))
    ok("report", folder, "--out", tmp_path / "report")
    with gzip.open(tmp_path / "report" / "answers.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    shared = [r for r in rows if r["cell"] == "before the attack"]
    own = [r for r in rows if r["cell"] == "before the attack (vaccine)"]
    assert len(own) == len(shared) == 4
    assert own[0]["prompt"] == changed["prompt"] and own[0]["response"] == "Vaccine's own words."
    assert shared[0]["response"] != "Vaccine's own words." and own[1:] == [{**r, "cell": own[0]["cell"]} for r in shared[1:]]
    md = (tmp_path / "report" / "sweep.md").read_text()
    assert "aligned with vaccine (aligned-vaccine)" in md and "FA 12.0" in md
    # the report folder, reported again, passes both models' answers on
    ok("report", tmp_path / "report", "--out", tmp_path / "again")
    with gzip.open(tmp_path / "again" / "answers.jsonl.gz", "rt") as f:
        assert [json.loads(line) for line in f] == rows
