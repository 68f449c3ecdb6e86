"""Bad input is never a traceback: every reader x every kind of bad file, and every artifact a command loads x
{missing, truncated, corrupted}. Each case is one line naming the file and what was wrong (exit code 2
through the CLI), and nothing is written."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from pathlib import Path

import pytest
from clirun import invoke
from recipes import write_recipe

from surgerycli.data.finetune import read_examples
from surgerycli.data.refsets import read_refset
from surgerycli.errors import InputError

PAIRS = [{"prompt": f"How do I do thing {i}?", "response": f"Like this: step {i}."} for i in range(6)]
FORMATS = ("txt", "jsonl", "json", "csv", "parquet", "folder")
BAD = ("empty", "binary", "not-utf8", "truncated", "wrong-types", "missing-fields")


def binary_bytes() -> bytes:
    return bytes(random.Random(0).randrange(256) for _ in range(4096))


def write_rows(path: Path, fmt: str, rows: list[dict]) -> None:
    """`rows` in format `fmt` at `path` (a file, or a save_to_disk folder)."""
    if fmt == "txt":
        path.write_text("".join(f"{r['prompt']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=sorted({k for r in rows for k in r}) or ["prompt", "response"])
        w.writeheader()
        w.writerows(rows)
        path.write_text(buf.getvalue())
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows) if rows else pa.table({"prompt": pa.array([], pa.string())})
        pq.write_table(table, path)
    else:
        import datasets

        (datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({"prompt": []})).save_to_disk(str(path))


def bad_source(tmp_path: Path, fmt: str, case: str) -> Path | None:
    """A data source of format `fmt` that is bad in the way `case` says; None where the case cannot occur in
    that format (a .txt line has no types or fields; a parquet file or dataset folder is binary by design)."""
    path = tmp_path / ("data" if fmt == "folder" else f"data.{fmt}")
    if case == "empty":
        write_rows(path, fmt, [])
    elif case == "binary":
        if fmt == "folder":
            write_rows(path, fmt, PAIRS)
            for arrow in path.glob("*.arrow"):
                arrow.write_bytes(binary_bytes())
        else:
            path.write_bytes(binary_bytes())
    elif case == "not-utf8":
        if fmt in ("parquet", "folder"):
            return None
        write_rows(path, fmt, [{"prompt": "Où est la café?", "response": "Voilà."}, *PAIRS])
        path.write_bytes(path.read_text().encode("latin-1"))
    elif case == "truncated":
        if fmt == "txt":
            return None
        write_rows(path, fmt, PAIRS)
        if fmt == "folder":
            for arrow in path.glob("*.arrow"):
                arrow.write_bytes(arrow.read_bytes()[:200])
        else:
            data = path.read_bytes()
            cut = data.rindex(b"thing 5") + 3 if fmt in ("jsonl", "json", "csv") else len(data) // 2
            path.write_bytes(data[:cut])
    elif case == "wrong-types":
        if fmt in ("txt", "csv"):
            return None
        write_rows(path, fmt, [{"prompt": 7, "response": 8}] * 3)
    else:  # missing-fields
        if fmt == "txt":
            return None
        write_rows(path, fmt, [{"question_text": "What?", "reply": "That."}] * 3)
    return path


def one_line(error: InputError, path: Path) -> str:
    text = str(error)
    assert "\n" not in text and str(path) in text, text
    return text


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_reader_names_the_file_for_every_bad_input(tmp_path, fmt, case):
    path = bad_source(tmp_path, fmt, case)
    if path is None:
        pytest.skip(f"a {fmt} source cannot be {case}")
    for read in (lambda: read_examples(path), lambda: read_refset(path, "harmful")):
        with pytest.raises(InputError) as e:
            read()
        text = one_line(e.value, path)
        if case == "wrong-types":  # the field is there: its type is what is wrong, and the message says so
            assert "`prompt` must be text, got int 7" in text, text


def test_a_bad_data_file_through_the_cli_is_exit_code_2(tmp_path, tiny_llama_dir):
    path = bad_source(tmp_path, "jsonl", "not-utf8")
    result = invoke("inspect", tiny_llama_dir, "--harmful", path, "--json", tmp_path / "out.json")
    assert result.exit_code == 2 and "not UTF-8" in result.output and str(path.name) in result.output, result.output
    assert not (tmp_path / "out.json").exists()


# ---- artifacts a command loads -------------------------------------------------------------------

def truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2 if keep is None else keep])


@pytest.mark.parametrize("damage", ["missing", "corrupted-config"])  # cut short: tests/test_truncated.py
@pytest.mark.parametrize("command", ["inspect", "eval"])
def test_a_damaged_adapter(tmp_path, tiny_llama_dir, adapter, damage, command):
    bad = tmp_path / "bad"
    if damage != "missing":
        shutil.copytree(adapter, bad)
        (bad / "adapter_config.json").write_bytes(binary_bytes())
    out = tmp_path / "out.json" if command == "inspect" else tmp_path / "eval"
    args = (["inspect", tiny_llama_dir, "--adapter", bad, "--json", out] if command == "inspect" else
            ["eval", bad, "--base", tiny_llama_dir, "--out", out, "--limit", 1])
    result = invoke(*args)
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert str(bad) in result.output and len(result.output.strip().splitlines()) <= 2, result.output
    assert not out.exists()


@pytest.mark.parametrize("damage", ["missing", "corrupted-config", "config-only", "no-weights", "garbage-gguf"])
def test_a_damaged_model(tmp_path, tiny_llama_dir, damage):  # cut short: tests/test_truncated.py
    bad = tmp_path / ("bad.gguf" if "gguf" in damage else "bad")
    if damage == "garbage-gguf":
        bad.write_bytes(binary_bytes())
    elif damage != "missing":
        shutil.copytree(tiny_llama_dir, bad)
        if damage == "corrupted-config":
            (bad / "config.json").write_text('{"model_type": "llama", "hidden')
        elif damage == "config-only":
            for f in bad.iterdir():
                if f.name != "config.json":
                    f.unlink()
        else:
            (bad / "model.safetensors").unlink()
    result = invoke("inspect", bad, "--json", tmp_path / "out.json")
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert str(bad) in result.output and len(result.output.strip().splitlines()) <= 2, result.output
    assert not (tmp_path / "out.json").exists()


def sweep_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "sweep"
    cell = folder / "cells" / "p0.1-sft"
    (cell / "eval").mkdir(parents=True)
    (folder / "base.json").write_text(json.dumps({"model": "m", "harmful_score": 50.0, "accuracy": 40.0}))
    (cell / "cell.json").write_text(json.dumps({"name": "p0.1-sft", "status": "ok", "method": "sft",
                                                "poison_ratio": 0.1, "alpha": None, "harmful_score": 60.0}))
    (cell / "eval" / "results.json").write_text(json.dumps({"runs": [{"safety": {"harmbench": {"judge": "keyword"}}}]}))
    return folder


@pytest.mark.parametrize("damage", ["missing", "truncated-cell", "corrupted-cell", "not-a-cell", "truncated-results",
                                    "corrupted-results", "truncated-sweep"])
def test_a_damaged_report_folder(tmp_path, damage):
    folder = sweep_folder(tmp_path)
    cell = folder / "cells" / "p0.1-sft"
    target = {"truncated-cell": cell / "cell.json", "corrupted-cell": cell / "cell.json",
              "not-a-cell": cell / "cell.json", "truncated-results": cell / "eval" / "results.json",
              "corrupted-results": cell / "eval" / "results.json", "truncated-sweep": folder / "sweep.json"}.get(damage)
    if damage == "missing":
        shutil.rmtree(folder)
        target = folder
    elif damage == "truncated-sweep":
        target.write_text('{"cells": [{"name": "p0.1-s')
    elif damage.startswith("truncated"):
        truncate(target)
    elif damage == "not-a-cell":
        target.write_text(json.dumps([1, 2]))
    else:
        target.write_bytes(binary_bytes())
    result = invoke("report", folder, "--out", tmp_path / "report")
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert str(target) in result.output and len(result.output.strip().splitlines()) <= 2, result.output
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "another-cell", "failed"])
def test_a_half_written_sweep_cell_is_redone_not_trusted(tmp_path, damage):
    from rich.console import Console

    from surgerycli.study.sweep import finished

    done = sweep_folder(tmp_path) / "cells" / "p0.1-sft" / "cell.json"
    good = json.loads(done.read_text())
    console = Console(file=io.StringIO())
    assert finished(done, ("name", "status"), console) == good
    if damage == "truncated":
        truncate(done)
    elif damage == "corrupted":
        done.write_bytes(binary_bytes())
    elif damage == "another-cell":
        done.write_text(json.dumps([good]))
    else:
        done.write_text(json.dumps({"name": "p0.1-sft", "status": "failed", "error": "x"}))
    record = finished(done, ("name", "status"), console)
    if damage == "failed":  # a whole record of a failed cell: read, and the sweep reruns it for its status
        assert record == {"name": "p0.1-sft", "status": "failed", "error": "x"}
    else:
        assert record is None and "redoing it" in console.file.getvalue()


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_llama_dir, finetune_data):
    """Plain SGD at a huge learning rate: the weights blow up within a few steps."""
    path = write_recipe(tmp_path / "r.toml", tiny_llama_dir,
                        {"benign": finetune_data / "gsm.jsonl", "poison_ratio": 0.0, "num_samples": 16},
                        lora={"enabled": False}, defense={"method": "sft"}, measure={"samples": 0},
                        train={"batch_size": 2, "learning_rate": 1e12, "max_grad_norm": 0.0, "max_steps": 30,
                               "save_steps": 1, "save_total_limit": 30, "gradient_checkpointing": False},
                        trainer={"optim": "sgd"})
    out = tmp_path / "out"
    result = invoke("finetune", path, "--output", out)
    assert result.exit_code == 2, result.output + repr(result.exception)
    line = result.output.strip().splitlines()[-1]
    step = int(line.split("step ")[1].split(":")[0])
    assert "not finite" in result.output and 1 < step < 30, result.output
    assert f"the last checkpoint, checkpoint-{step - 1}, is kept" in result.output.replace("\n", " "), result.output
    assert (out / "checkpoints" / f"checkpoint-{step - 1}" / "trainer_state.json").is_file()
    assert not (out / "checkpoints" / f"checkpoint-{step}").exists()
    assert not (out / "summary.json").exists() and not (out / "model").exists()


def test_a_lock_left_by_a_dead_or_zombie_run_is_taken_over_and_a_live_one_refused(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from surgerycli.files import LOCK, FolderLock

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit within 30 s"
            time.sleep(0.01)  # exited, not reaped: kill(pid, 0) still finds it
        for pid, taken in ((zombie.pid, True), (live.pid, False), (2 ** 22 + 1, True)):
            (tmp_path / LOCK).write_text(f"{pid}\n")
            if taken:
                with FolderLock(tmp_path, "output.dir"):
                    assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
            else:
                with pytest.raises(InputError, match=rf"another surgery run \(pid {pid}\) is writing here"):
                    FolderLock(tmp_path, "output.dir").__enter__()
    finally:
        live.kill()
        live.wait()
        zombie.wait()
