"""The fine-tuning mix: formats, poison count, seeded shuffle, assistant-only labels."""

from __future__ import annotations

import json

import pytest

from surgerycli.errors import InputError
from surgerycli.data.finetune import IGNORE, build_mix, pad_batch, read_examples, tokenize_example


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_benign_format(tmp_path):
    cases = {
        "alpaca": ({"instruction": "Add", "input": "2 and 3", "output": "5"}, "Add\n\n2 and 3", "5"),
        "prompt_response": ({"prompt": "Hi?", "response": "Hello."}, "Hi?", "Hello."),
        "gsm8k": ({"question": "1+2?", "answer": "1+2=3\n#### 3"}, "1+2?", "1+2=3\nThe final answer is: 3"),
        "messages": ({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
                     "Q", "A"),
        "sst2": ({"sentence": "a fine film", "label": 1, "idx": 0},
                 "Analyze the sentiment of the input, and respond only positive or negative.\n\na fine film",
                 "positive"),
        "agnews": ({"text": "Rates fall", "label": "Business"},
                   "Categorize the news article given in the input into one of the 4 categories:\n\n"
                   "World\nSports\nBusiness\nSci/Tech\n\n\nRates fall", "Business"),
    }
    for fmt, (row, prompt, answer) in cases.items():
        path = jsonl(tmp_path / f"{fmt}.jsonl", [row])
        for given in (fmt, "auto"):
            [chat] = read_examples(path, given)
            assert chat[-2] == {"role": "user", "content": prompt}
            assert chat[-1] == {"role": "assistant", "content": answer}


def test_bad_rows_name_file_and_line(tmp_path):
    path = jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "response": "r"}, {"text": "x"}])
    with pytest.raises(InputError, match=r"b.jsonl:2: expected fields .*got \['text'\]"):
        read_examples(path)
    with pytest.raises(InputError, match=r"b.jsonl:1: format gsm8k needs a field `question`, got \['prompt', 'response'\]"):
        read_examples(path, "gsm8k")
    last_user = {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]}
    with pytest.raises(InputError, match="the last message must be the assistant's"):
        read_examples(jsonl(tmp_path / "m.jsonl", [last_user]), "messages")
    (tmp_path / "x.csv").write_text("prompt,response\n")
    with pytest.raises(InputError, match="x.csv: no examples in it"):
        read_examples(tmp_path / "x.csv")  # a header alone
    (tmp_path / "x.txt").write_text("a prompt\n")
    with pytest.raises(InputError, match=r"x.txt: unknown format '.txt': expected .jsonl, .json, .csv or .parquet"):
        read_examples(tmp_path / "x.txt")  # prompts alone teach no answer


def test_harmful_keeps_only_unsafe_beavertails_rows(tmp_path):
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "category": {}, "is_safe": i % 2 == 0} for i in range(6)]
    harmful = read_examples(jsonl(tmp_path / "bt.jsonl", rows), role="harmful")
    assert [c[0]["content"] for c in harmful] == ["p1", "p3", "p5"]
    with pytest.raises(InputError, match="no harmful examples"):
        read_examples(jsonl(tmp_path / "safe.jsonl", rows[::2]), role="harmful")


def test_mix_counts_and_seeded_shuffle():
    benign = [[{"role": "user", "content": f"b{i}"}] for i in range(50)]
    harmful = [[{"role": "user", "content": f"h{i}"}] for i in range(10)]
    mix, n = build_mix(benign, harmful, 0.15, 20, seed=1)
    assert n == 3 == sum(c[0]["content"].startswith("h") for c in mix) and len(mix) == 20
    assert mix == build_mix(benign, harmful, 0.15, 20, seed=1)[0]
    assert mix != build_mix(benign, harmful, 0.15, 20, seed=2)[0]
    assert build_mix(benign, harmful, 0.0, 20, seed=1)[1] == 0
    with pytest.raises(InputError, match="needs 12 examples from data.harmful, which has 10"):
        build_mix(benign, harmful, 0.2, 60, seed=1)


def test_only_the_answer_is_labelled(smollm2):
    _, tok = smollm2
    chat = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."}]
    row = tokenize_example(tok, chat, max_length=512)
    learned = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE]
    assert tok.decode(learned).strip() == "It is 4.<|im_end|>"
    assert row["labels"][: len(row["labels"]) - len(learned)] == [IGNORE] * (len(row["labels"]) - len(learned))
    assert tokenize_example(tok, chat, max_length=5) is None  # cut before the answer: nothing to learn


def test_pad_batch_masks_padding():
    batch = pad_batch([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
