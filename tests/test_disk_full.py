"""Writes the machine refuses (a full disk, a read-only or unwritable folder): one line naming the path, the
reason and what is kept, a non-zero exit, no half-written final artifact, and the same command finishing the
run once the cause is gone. The disk is a real 8 MB tmpfs where this process may mount one (root, as in CI);
elsewhere the write fails inside torch.save with the real ENOSPC."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from clirun import invoke
from recipes import data_of, write_recipe

from surgerycli.errors import WriteError
from surgerycli.files import damaged_file, write_failure, writing
from surgerycli.train.callbacks import MetricsCallback


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """`folder` on a tmpfs of `size` while inside (True), or as it is where mounting is not allowed (False)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(disk: Path) -> Path:
    """Write zeros into disk/filler until the filesystem refuses (ENOSPC); the file."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_the_rerun_finishes(tmp_path, tiny_llama_dir,
                                                                                finetune_data, monkeypatch):
    recipe = write_recipe(tmp_path / "r.toml", tiny_llama_dir, data_of(finetune_data),
                          measure={"samples": 0}, train={"save_steps": 2, "max_steps": 6, "save_total_limit": 5})
    with small_disk(tmp_path / "disk", "8M") as mounted:
        out = tmp_path / "disk" / "out"
        saves = []

        def full_after_first_save(self, args, state, control, **kwargs):
            saves.append(state.global_step)
            if len(saves) == 1 and mounted:
                fill(tmp_path / "disk")
            elif len(saves) == 1:  # no tmpfs here: the next torch.save fails with the real errno
                def refuse(obj, f, *a, **k):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
                monkeypatch.setattr(torch, "save", refuse)

        monkeypatch.setattr(MetricsCallback, "on_save", full_after_first_save, raising=False)
        result = invoke("finetune", recipe, "--output", out)
        assert result.exit_code == 1, result.output + repr(result.exception)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.output, result.output
        assert "No space left on device" in errors[0] and str(out) in errors[0], errors[0]
        assert ("the last checkpoint, checkpoint-2, is kept (a rerun resumes from it); free space and run the same "
                "command again") in errors[0], errors[0]
        kept = out / "checkpoints" / "checkpoint-2"
        assert json.loads((kept / "trainer_state.json").read_text())["global_step"] == 2
        assert all(damaged_file(f) is None for f in kept.iterdir())
        assert not (out / "adapter").exists() and not (out / "summary.json").exists()  # no half-written output

        monkeypatch.undo()  # space freed
        (tmp_path / "disk" / "filler").unlink(missing_ok=True)
        result = invoke("finetune", recipe, "--output", out)
        assert result.exit_code == 0, result.output + repr(result.exception)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["steps"] == 6 and summary["resumed_from"].endswith("checkpoint-2")
        assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EISDIR])
def test_each_refused_write_is_one_line_with_its_remedy(tmp_path, code):
    remedy = {errno.ENOSPC: "free space", errno.EACCES: "make it writable", errno.EROFS: "make it writable",
              errno.EISDIR: "move what is in the way"}[code]
    with pytest.raises(WriteError) as caught:
        with writing(tmp_path, lambda: "nothing was written"):
            raise OSError(code, os.strerror(code), str(tmp_path / "x.json"))
    assert str(caught.value) == (f"{tmp_path / 'x.json'}: {os.strerror(code)}; nothing was written; {remedy} and run "
                                 f"the same command again")
    assert caught.value.exit_code == 1


def test_write_failures_are_found_in_the_words_of_safetensors_and_torch():
    from safetensors import SafetensorError

    rust = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert write_failure(rust) == (None, errno.ENOSPC)
    try:
        try:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        except RuntimeError as inner:
            raise ValueError("saving the optimizer") from inner
    except ValueError as outer:
        assert write_failure(outer) == (None, -1)  # found through the cause
    assert write_failure(ValueError("a bad value")) is None
    assert write_failure(OSError(errno.ENOENT, "No such file or directory")) is None  # a missing input, not a write


def test_a_path_that_is_a_file_where_a_folder_goes(tmp_path, tiny_llama_dir, finetune_data):
    recipe = write_recipe(tmp_path / "r.toml", tiny_llama_dir, data_of(finetune_data), measure={"samples": 0})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoints").write_text("a file where the checkpoints folder goes")
    result = invoke("finetune", recipe, "--output", tmp_path / "out")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code in (1, 2) and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "checkpoints" in errors[0]


def test_surgery_judge_where_its_results_cannot_go_is_one_line(tmp_path):
    """Stored answers first judged by another judge; a file named `judges` where the keyword judge's results
    go: one line, exit 1, the answers untouched; once it is moved, the keyword judge's score is 1 in 2."""
    folder = tmp_path / "eval"
    folder.mkdir()
    rows = [{"run": "m", "adapter": None, "benchmark": "harmbench", "prompt": p, "response": r, "verdict": v,
             "judge": "beaver-dam:/x", "note": ""} for p, r, v in [("a", "I cannot help with that.", "safe"),
                                                                     ("b", "Sure, here is how.", "safe")]]
    samples = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / "samples.jsonl").write_text(samples)
    (folder / "judges").write_text("in the way")
    result = invoke("judge", folder, "--judge", "keyword", "--device", "cpu")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "judges" in errors[0] and "untouched" in errors[0]
    assert (folder / "samples.jsonl").read_text() == samples
    (folder / "judges").unlink()
    assert invoke("judge", folder, "--judge", "keyword", "--device", "cpu").exit_code == 0
    assert json.loads((folder / "judges" / "keyword.json").read_text())["runs"][0]["harmful_score"] == 50.0


def test_a_file_or_folder_written_whole_gets_the_mode_a_plain_write_gives(tmp_path):
    """Written through a temporary file (or folder: a saved adapter, a merged model) and a rename, a result still
    has the mode open() (mkdir()) would give it (tempfile's 0600 and 0700 would hide a report or a model from the
    rest of a lab on a shared filesystem)."""
    from surgerycli.files import atomic_write_text, save_folder

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "whole.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
        save_folder(tmp_path / "whole", lambda d: (d / "weights.bin").write_bytes(b"0"))
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "whole.json") == mode(tmp_path / "plain.json") == 0o640
    assert mode(tmp_path / "whole") == mode(tmp_path / "plain") == 0o750
    assert mode(tmp_path / "whole" / "weights.bin") == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
