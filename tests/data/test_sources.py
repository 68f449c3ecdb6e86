"""Every data key takes .jsonl/.json/.csv/.parquet, a save_to_disk folder, or a hub dataset table."""

from __future__ import annotations

import csv
import json

import pytest

from clirun import invoke
from surgerycli.data.finetune import read_examples
from surgerycli.data.refsets import read_refset
from surgerycli.errors import InputError
from surgerycli.train.recipe import dump_recipe, load_recipe

ROWS = [{"question": f"What is {i} + 2?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"} for i in range(5)]
PAIRS = [{"prompt": f"bad thing {i}?", "response": f"Sure {i}.", "is_safe": i % 2 == 0} for i in range(6)]


def write_all(tmp_path, rows: list[dict], stem: str) -> dict[str, str]:
    """The same rows as .jsonl, .csv, .parquet and a save_to_disk folder."""
    import datasets

    out = {}
    jsonl = tmp_path / f"{stem}.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out["jsonl"] = str(jsonl)
    with (tmp_path / f"{stem}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out["csv"] = str(tmp_path / f"{stem}.csv")
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / f"{stem}.parquet"))
    out["parquet"] = str(tmp_path / f"{stem}.parquet")
    ds.save_to_disk(str(tmp_path / f"{stem}-disk"))
    out["disk"] = str(tmp_path / f"{stem}-disk")
    return out


def test_every_source_gives_the_same_examples(tmp_path):
    sources = write_all(tmp_path, ROWS, "gsm")
    expect = read_examples(sources["jsonl"], "gsm8k")
    assert expect[0][-1]["content"].startswith("0 + 2")
    for kind in ("csv", "parquet", "disk"):
        assert read_examples(sources[kind], "gsm8k") == expect, kind


def test_is_safe_policy_holds_for_every_source(tmp_path):
    sources = write_all(tmp_path, PAIRS, "pairs")
    for kind in ("jsonl", "parquet", "disk", "csv"):
        harmful = read_refset(sources[kind], "harmful").samples
        assert [s[0]["content"] for s in harmful] == ["bad thing 1?", "bad thing 3?", "bad thing 5?"], kind


def test_a_dataset_dict_folder_names_its_splits(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"dd: a DatasetDict with splits train, test: name one split's folder"):
        read_examples(tmp_path / "dd")


def test_a_hub_table_reaches_load_dataset(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load(path, name=None, *, split=None, revision=None):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "smollm2"\n[data]\nbenign = {path = "openai/gsm8k", name = "main", split = "train"}\n'
                      'benign_format = "gsm8k"\npoison_ratio = 0.0\n')
    r = load_recipe(recipe)
    assert r.data.benign == "hub:openai/gsm8k?name=main&split=train"
    assert calls == []  # validating a recipe never touches the hub
    assert read_examples(r.data.benign, "gsm8k") == read_examples(write_all(tmp_path, ROWS, "g")["jsonl"], "gsm8k")
    assert calls == [("openai/gsm8k", "main", "train", None)]
    again = tmp_path / "again.toml"
    again.write_text(dump_recipe(r))  # the resolved recipe reads back to the same source
    assert load_recipe(again).data.benign == r.data.benign


def test_bad_sources_name_the_key(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "smollm2"\n[data]\nbenign = {path = "openai/gsm8k", spilt = "train"}\n'
                      f'harmful = "{tmp_path / "nowhere.parquet"}"\n')
    result = invoke("finetune", recipe, "--dry-run")
    assert result.exit_code == 2
    assert "data.benign: expected a file (.jsonl, .json, .csv, .parquet), a folder written by save_to_disk, or a hub " \
           "table {path, name, split}" in result.output.replace("\n", "")
    assert "data.harmful: no such file or dataset folder" in result.output.replace("\n", "")


def test_a_bad_row_is_named(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"question": "q", "answer": "a\n#### 1"}, {"question": "q2", "text": "no answer"}]).to_parquet(
        str(tmp_path / "bad.parquet"))
    with pytest.raises(InputError, match=r"bad.parquet row 1"):
        read_examples(tmp_path / "bad.parquet", "gsm8k")
