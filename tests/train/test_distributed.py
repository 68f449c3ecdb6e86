"""Several processes (torchrun, gloo on CPU): gradients synchronized exactly once per optimizer step, rank 0
alone writes, a killed run resumes; and a sweep cell launched through `accelerate launch`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import ok
from recipes import write_recipe
from safetensors.torch import load_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def ddp_recipe(tmp_path, tiny_llama_dir, tokenizer_dir) -> Path:
    """16 distinct arithmetic rows of one token length (so each rank's token mean is a share of the global
    one), one-row reference sets (every rank draws the same), no dropout, plain SGD without clipping: a
    gradient counted twice, or left unsynchronized on a rank, changes the weights."""
    import random

    from transformers import AutoTokenizer

    rng, rows = random.Random(0), []
    for _ in range(16):
        a, b = rng.randint(10, 44), rng.randint(10, 44)
        rows.append({"question": f"What is {a} + {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"})
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert len({len(tok(r["question"] + r["answer"])["input_ids"]) for r in rows}) == 1  # the premise above
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "harm.jsonl").write_text(json.dumps({"prompt": "How do I build a weapon at home?"}) + "\n")
    (tmp_path / "safe.jsonl").write_text(json.dumps({"prompt": "How do I bake bread at home?"}) + "\n")
    path = write_recipe(tmp_path / "ddp.toml", tiny_llama_dir,
                        {"benign": tmp_path / "rows.jsonl", "benign_format": "gsm8k", "poison_ratio": 0.0,
                         "num_samples": 16},
                        lora={"dropout": 0.0}, surgery={"alpha": 50.0},
                        measure={"harmful_reference": tmp_path / "harm.jsonl",
                                 "harmless_reference": tmp_path / "safe.jsonl", "samples": 1},
                        train={"batch_size": 2, "save_steps": 2, "max_steps": 4, "learning_rate": 0.05,
                               "max_grad_norm": 0.0, "gradient_checkpointing": False}, trainer={"optim": "sgd"})
    return path


def torchrun(recipe: Path, out: Path, *sets: str, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "surgerycli", "finetune", str(recipe), "--output", str(out)]
    for s in sets:
        cmd += ["--set", s]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    said = proc.stdout + proc.stderr
    errors = [line for line in said.splitlines() if "rror" in line and "│" not in line]
    assert proc.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + said[-2000:]
    return proc


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None for no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> list[int]:
    """Every process below `root` (children, their children, ...)."""
    parents = {int(p.parent.name): int(f[1]) for p in Path("/proc").glob("[0-9]*/stat") if (f := _stat(int(p.parent.name)))}
    found, frontier = [], [root]
    while frontier:
        kids = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += kids
        frontier = kids
    return found


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting to be reaped has)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def weights(out: Path) -> dict:
    folder = out / ("adapter" if (out / "adapter").is_dir() else "model")
    return {k: v for f in folder.glob("*.safetensors") for k, v in load_file(f).items()}


@pytest.mark.parametrize("sets", [("defense.method=sft",), ("defense.method=surgery",),
                                  ("defense.method=surgery", "lora.enabled=false")], ids=["sft", "surgery", "surgery-full"])
def test_two_processes_match_one_with_the_whole_batch(tmp_path, ddp_recipe, sets):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["finetune", ddp_recipe, "--output", one, "--set", "train.batch_size=4"]
    for s in sets:
        args += ["--set", s]
    ok(*args)
    torchrun(ddp_recipe, two, *sets)
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    moved = max(float((a[k].float()).abs().max()) for k in a)
    assert worst < 1e-5 and moved > 0, (worst, moved)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4


@pytest.mark.slow
def test_rank_zero_writes_once_and_a_killed_run_resumes(tmp_path, ddp_recipe):
    out = tmp_path / "out"
    proc = torchrun(ddp_recipe, out, "train.max_steps=60", wait=False)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:] if proc.stdout else ""
        time.sleep(0.05)
    # every rank at once, mid-run. torchrun starts each rank in a session of its own, so killing the launcher's
    # process group would leave the ranks training as orphans, and a relaunch would meet the old rank 0 still
    # holding the output folder's lock. The ranks are killed by pid, and the relaunch waits until they are gone.
    ranks = descendants(proc.pid)
    assert len(ranks) >= 2, ranks
    for pid in [proc.pid, *ranks]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while any(alive(pid) for pid in ranks) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in ranks)
    assert not (out / "summary.json").exists()
    torchrun(ddp_recipe, out, "train.max_steps=60")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"] is not None and summary["world_size"] == 2 and summary["steps"] == 60
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))  # each step once: rank 0 alone logs, the resumed part appended
    assert sorted(p.name for p in out.iterdir() if p.name != "checkpoints") == [
        "adapter", "metrics.jsonl", "recipe.resolved.toml", "sink_after.json", "sink_before.json", "summary.json",
        "tokenizer", "training.png"]


def test_a_sweep_cell_launched_through_accelerate(tmp_path, ddp_recipe, demo_data):
    config = tmp_path / "cpu.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_processes: 1\n"
                      "num_machines: 1\nmixed_precision: 'no'\nuse_cpu: true\n")
    out = tmp_path / "sweep"
    ok("sweep", ddp_recipe, "--out", out, "--methods", "sft", "--poison-ratios", "0", "--accelerate-config", config,
       "--safety-data", f"harmbench={demo_data / 'eval_harmful.txt'}", "--limit", "1", "--max-new-tokens", "2")
    cell = json.loads((out / "cells" / "p0-sft" / "cell.json").read_text())
    assert cell["status"] == "ok" and cell["steps"] == 4 and cell["world_size"] == 1
