"""`surgery sweep --grid KEY=V1,V2 --seeds ...`: cells named by their values, the values reaching each cell's
recipe, every cell validated first; and `surgery report` merging two sweep folders."""

from __future__ import annotations

import json

import pytest

from clirun import invoke, ok
from surgerycli.errors import InputError
from surgerycli.study.grid import Cell, grid, parse_grid


def test_grid_expansion_names_and_overrides():
    cells = grid([0.1], ["sft", "surgery"], [300.0, 3000.0],
                 {"train.learning_rate": ["1e-4", "5e-4"], "train.epochs": ["1", "3"]}, [0, 1])
    assert len(cells) == 2 * 2 * 2 * (1 + 2)  # seeds x lr x epochs x (sft + two alphas)
    assert cells[0].name == "p0.1-sft-train.learning_rate=1e-4-train.epochs=1-s0"
    assert cells[2].name == "p0.1-surgery-a3000-train.learning_rate=1e-4-train.epochs=1-s0"
    assert cells[-1].name == "p0.1-surgery-a3000-train.learning_rate=5e-4-train.epochs=3-s1"
    assert len({c.name for c in cells}) == len(cells)
    assert [c.seed for c in cells] == [0] * 12 + [1] * 12  # seed by seed: a partial study stays balanced
    assert cells[-1].overrides() == ["data.poison_ratio=0.1", "defense.method=surgery", "surgery.alpha=3000.0",
                                     "train.learning_rate=5e-4", "train.epochs=3", "train.seed=1"]
    assert cells[-1].record() == {"name": cells[-1].name, "poison_ratio": 0.1, "method": "surgery", "alpha": 3000.0, "options": {},
                                  "grid": {"train.learning_rate": "5e-4", "train.epochs": "3"}, "seed": 1}
    # without --grid and --seeds a cell keeps today's name and overrides (old sweep folders resume)
    plain = grid([0.2], ["sft"], [300.0])[0]
    assert plain == Cell(0.2, "sft") and plain.name == "p0.2-sft"
    assert plain.overrides() == ["data.poison_ratio=0.2", "defense.method=sft"]
    with pytest.raises(AttributeError):
        plain.seed = 3  # frozen


@pytest.mark.parametrize("text, message", [
    ("learning_rate=1e-4", "expected SECTION.KEY=V1,V2"),
    ("train.learning_rate", "expected SECTION.KEY=V1,V2"),
    ("train.learning_rate=", "expected SECTION.KEY=V1,V2"),
    ("train.seed=1,2", "use --seeds"),
    ("data.poison_ratio=0.1", "use --poison-ratios"),
    ("train.epochs=1,1", "listed twice"),
])
def test_bad_grids_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        parse_grid([text])


def test_sweep_grid_and_seeds_reach_each_cell(tmp_path, sweep_recipe, demo_data):
    out = tmp_path / "sweep"
    ok("sweep", sweep_recipe, "--out", out, "--poison-ratios", "0.25", "--methods", "sft",
       "--grid", "train.learning_rate=1e-3,2e-3", "--seeds", "3,4",
       "--safety-data", f"harmbench={demo_data / 'eval_harmful.txt'}",
       "--task-data", f"surgery_gsm8k={demo_data / 'arithmetic_test.jsonl'}", "--limit", "2", "--max-new-tokens", "2")
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert [c["name"] for c in cells] == [f"p0.25-sft-train.learning_rate={lr}-s{s}" for s in (3, 4) for lr in ("1e-3", "2e-3")]
    for c in cells:
        recipe = (out / "cells" / c["name"] / "finetune" / "recipe.resolved.toml").read_text()
        assert f"learning_rate = {float(c['grid']['train.learning_rate'])}" in recipe and f"seed = {c['seed']}" in recipe
        assert c["hs_n"] == 2 and c["fa_n"] == 2 and c["significant_positive_heads_after"] is not None
    md = (out / "sweep.md").read_text()
    assert "| grid | poison ratio | SFT HS |" in md and "± " in md and "## Every cell" in md
    # `surgery report` merges this sweep with a second one (another learning rate) into one table
    out2 = tmp_path / "sweep2"
    ok("sweep", sweep_recipe, "--out", out2, "--poison-ratios", "0.25", "--methods", "sft",
       "--grid", "train.learning_rate=4e-3", "--seeds", "3", "--safety-data", f"harmbench={demo_data / 'eval_harmful.txt'}",
       "--task-data", f"surgery_gsm8k={demo_data / 'arithmetic_test.jsonl'}", "--limit", "2", "--max-new-tokens", "2")
    merged = tmp_path / "merged"
    result = ok("report", out, out2, "--out", merged)
    assert "Spearman's rho across cells" in result.output and "N = 5 cells" in result.output
    sweep = json.loads((merged / "sweep.json").read_text())
    assert len(sweep["cells"]) == 5 and sweep["judge"] == "keyword"
    md = (merged / "sweep.md").read_text()
    for lr in ("1e-3", "2e-3", "4e-3"):
        assert f"train.learning_rate={lr}" in md
    assert (merged / "correlation.png").read_bytes()[:4] == b"\x89PNG"
    corr = json.loads((merged / "correlation.json").read_text())
    assert corr["sign"]["n"] == 5


def test_sweep_validates_every_grid_cell_before_training(tmp_path, sweep_recipe):
    result = invoke("sweep", sweep_recipe, "--out", tmp_path / "s", "--methods", "sft", "--poison-ratios", "0",
                    "--grid", "train.learning_rate=1e-4,fast")
    assert result.exit_code == 2 and "train.learning_rate" in result.output and "fast" in result.output, result.output
    assert not (tmp_path / "s" / "cells").exists()


def test_report_refuses_a_folder_without_a_sweep(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("report", tmp_path / "empty", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "not a sweep folder" in result.output and not (tmp_path / "o").exists()


def test_report_names_a_missing_folder_before_asking_for_out(tmp_path):
    result = invoke("report", tmp_path / "typo")
    assert result.exit_code == 2 and f"{tmp_path / 'typo'}: no such sweep folder" in result.output


def test_a_methods_own_axis_multiplies_its_cells_only(tmp_path, sweep_recipe, demo_data):
    from surgerycli.train.defenses import registry

    for name, cls in registry().items():  # each defense names its main hyperparameter, a key of its section
        assert cls.main_option is None or cls.main_option in cls.options_class.model_fields, name
    cells = grid([0.1], ["sft", "lisa", "surgery"], [300.0, 3000.0], {"lisa.rho": ["0.5", "2"], "train.epochs": ["1", "2"]})
    assert [c.name for c in cells[:5]] == ["p0.1-sft-train.epochs=1", "p0.1-lisa-rho=0.5-train.epochs=1",
                                           "p0.1-lisa-rho=2-train.epochs=1", "p0.1-surgery-a300-train.epochs=1",
                                           "p0.1-surgery-a3000-train.epochs=1"]
    assert len(cells) == 2 * (1 + 2 + 2)  # epochs x (SFT once, Lisa per rho, Surgery per alpha)
    assert cells[1].overrides() == ["data.poison_ratio=0.1", "defense.method=lisa", "lisa.rho=0.5", "train.epochs=1"]
    out = tmp_path / "sweep"
    ok("sweep", sweep_recipe, "--out", out, "--poison-ratios", "0", "--methods", "sft,lisa",
       "--grid", "lisa.rho=0.5,2", "--set", "lisa.alignment_steps=1", "--set", "lisa.finetune_steps=1",
       "--set", f"lisa.alignment_data={demo_data / 'refusal_pairs.jsonl'}",
       "--safety-data", f"harmbench={demo_data / 'eval_harmful.txt'}", "--limit", "1", "--max-new-tokens", "2")
    names = [c["name"] for c in json.loads((out / "sweep.json").read_text())["cells"]]
    assert names == ["p0-sft", "p0-lisa-rho=0.5", "p0-lisa-rho=2"]  # SFT once, Lisa once per value
    for name, rho in (("p0-lisa-rho=0.5", "0.5"), ("p0-lisa-rho=2", "2.0")):
        assert f"rho = {rho}\n" in (out / "cells" / name / "finetune" / "recipe.resolved.toml").read_text()
    md = (out / "sweep.md").read_text()
    assert "| SFT HS |" in md and "| Lisa rho=0.5 HS |" in md and "| Lisa rho=2 HS |" in md
    result = invoke("sweep", sweep_recipe, "--out", tmp_path / "s2", "--methods", "sft", "--grid", "lisa.rho=1,2")
    assert result.exit_code == 2 and "--grid lisa.rho: lisa is not among --methods" in result.output, result.output
    result = invoke("sweep", sweep_recipe, "--out", tmp_path / "s3", "--methods", "sft,vaccine", "--grid", "vaccine.rho=1,2")
    assert result.exit_code == 2 and "--grid vaccine.rho: vaccine runs when the model is aligned" in result.output


def test_grid_surgery_alpha_is_the_long_form_of_alphas(sweep_recipe):
    from surgerycli.study.grid import plan

    long = plan(sweep_recipe, [], "0", "sft,surgery", None, grid_texts=["surgery.alpha=10,50"])
    short = plan(sweep_recipe, [], "0", "sft,surgery", "10,50")
    assert [c.name for c in long] == [c.name for c in short] == ["p0-sft", "p0-surgery-a10", "p0-surgery-a50"]
    with pytest.raises(InputError, match="given with --alphas too"):
        plan(sweep_recipe, [], "0", "surgery", "10", grid_texts=["surgery.alpha=10,50"])


def test_an_own_axis_multiplies_the_chains_that_hold_its_defense(sweep_recipe):
    from surgerycli.study.grid import plan

    cells = plan(sweep_recipe, [], "0.1", "sft,surgery+antidote,antidote", "300",
                 grid_texts=["antidote.dense_ratio=0.1,0.2"])
    assert [c.name for c in cells] == ["p0.1-sft", "p0.1-surgery+antidote-a300-antidote.dense_ratio=0.1",
                                       "p0.1-surgery+antidote-a300-antidote.dense_ratio=0.2",
                                       "p0.1-antidote-dense_ratio=0.1", "p0.1-antidote-dense_ratio=0.2"]
    assert cells[2].overrides() == ["data.poison_ratio=0.1", "defense.method=surgery", "defense.post=antidote",
                                    "surgery.alpha=300.0", "antidote.dense_ratio=0.2"]
    assert cells[4].overrides()[-1] == "antidote.dense_ratio=0.2"
    from surgerycli.study.tables import method_label

    assert [method_label(c.record()) for c in cells[1:4]] == [
        "Surgery a=300 + Antidote dense_ratio=0.1", "Surgery a=300 + Antidote dense_ratio=0.2", "Antidote dense_ratio=0.1"]
