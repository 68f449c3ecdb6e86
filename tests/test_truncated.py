"""Every artifact a command reads, cut short at several points (inside its header, its metadata, its tensor
index, its data): always one line naming the file and exit code 2, never a traceback, and nothing written."""

from __future__ import annotations

import json
import shutil
import struct
import tomllib
from pathlib import Path

import pytest
import torch
from clirun import invoke

from surgerycli.models import embedded_gguf


def cut(source: Path, target: Path, at: int) -> Path:
    target.write_bytes(source.read_bytes()[:at])
    return target


def one_line_exit_2(result, path: Path) -> None:
    """The command failed as bad input: exit code 2, one `error:` line naming `path`, no traceback."""
    assert result.exit_code == 2, result.output + repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert str(path) in result.output.replace("\n", ""), result.output


def gguf_cuts() -> dict[str, int]:
    """Cut points of the packaged SmolLM2 GGUF, from its own layout: inside the 24-byte header, inside the
    key-value metadata (twice), inside the tensor index, inside the tensor data (twice)."""
    from gguf import GGUFReader

    path = embedded_gguf()
    reader = GGUFReader(str(path))
    index, data, size = reader.tensors[0].field.offset, reader.data_offset, path.stat().st_size
    return {"header": 12, "metadata-early": 200_000, "metadata-late": (24 + index) // 2 + index // 4,
            "tensor-index": (index + data) // 2, "data-early": data + 4096, "data-late": size - 1000}


@pytest.mark.parametrize("where", list(gguf_cuts()))
def test_a_cut_gguf(tmp_path, where):
    at = gguf_cuts()[where]
    bad = cut(embedded_gguf(), tmp_path / "cut.gguf", at)
    one_line_exit_2(invoke("inspect", bad, "--json", tmp_path / "out.json", "--samples", 1), bad)
    assert not (tmp_path / "out.json").exists()


def safetensors_cuts(path: Path) -> dict[str, int]:
    """Inside the 8-byte header length, inside the JSON header (the tensor index), inside the data."""
    header = struct.unpack("<Q", path.read_bytes()[:8])[0]
    size = path.stat().st_size
    return {"header": 4, "tensor-index": 8 + header // 2, "data-early": 8 + header + 16, "data-late": size - 8}


@pytest.mark.parametrize("where", ["header", "tensor-index", "data-early", "data-late"])
def test_cut_model_weights(tmp_path, tiny_llama_dir, where):
    bad = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, bad)
    weights = bad / "model.safetensors"
    cut(tiny_llama_dir / "model.safetensors", weights, safetensors_cuts(tiny_llama_dir / "model.safetensors")[where])
    one_line_exit_2(invoke("inspect", bad, "--json", tmp_path / "out.json", "--samples", 1), bad)
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("where", ["header", "tensor-index", "data-early", "data-late", "config"])
def test_a_cut_adapter(tmp_path, tiny_llama_dir, adapter, where):
    bad = tmp_path / "adapter"
    shutil.copytree(adapter, bad)
    if where == "config":
        text = (adapter / "adapter_config.json").read_text()
        (bad / "adapter_config.json").write_text(text[:len(text) // 2])
    else:
        weights = adapter / "adapter_model.safetensors"
        cut(weights, bad / "adapter_model.safetensors", safetensors_cuts(weights)[where])
    one_line_exit_2(invoke("eval", bad, "--base", tiny_llama_dir, "--out", tmp_path / "eval", "--limit", 1), bad)
    assert not (tmp_path / "eval" / "results.json").exists()


def zip_cuts(path: Path) -> dict[str, int]:
    """torch.save's zip: inside the first local header, inside the data, inside the central directory."""
    size = path.stat().st_size
    return {"header": 10, "data": size // 2, "index": size - 30}


@pytest.mark.parametrize("where", ["weights-header", "weights-tensor-index", "weights-data", "optimizer-header",
                                   "optimizer-data", "optimizer-index", "state-json"])
def test_a_cut_checkpoint_is_not_resumed_from(tmp_path, capsys, where):
    from safetensors.torch import save_file

    from surgerycli.train.callbacks import last_checkpoint

    for step in (2, 4):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        save_file({"w": torch.ones(64, 64)}, ckpt / "adapter_model.safetensors")
        torch.save({"state": torch.ones(64, 64)}, ckpt / "optimizer.pt")
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    newest = tmp_path / "checkpoint-4"
    kind, _, point = where.partition("-")
    if kind == "weights":
        f = newest / "adapter_model.safetensors"
        cut(f, f, safetensors_cuts(f)[{"header": "header", "tensor": "tensor-index", "data": "data-early"}[point.split("-")[0]]])
    elif kind == "optimizer":
        f = newest / "optimizer.pt"
        cut(f, f, zip_cuts(f)[point])
    else:
        f = newest / "trainer_state.json"
        cut(f, f, 5)
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert not newest.exists()


def json_cuts(text: str) -> list[int]:
    """Points that leave `text` invalid JSON: just inside it, mid-way, and before its closing bracket."""
    points = [1, len(text) // 2, len(text.rstrip()) - 1]
    for at in points:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text[:at])
    return points


@pytest.mark.parametrize("name", ["sweep.json", "cell.json", "results.json"])
def test_cut_sweep_files(tmp_path, name):
    folder = tmp_path / "sweep"
    cell = folder / "cells" / "p0.1-sft"
    (cell / "eval").mkdir(parents=True)
    files = {"sweep.json": folder / "sweep.json", "cell.json": cell / "cell.json",
             "results.json": cell / "eval" / "results.json"}
    record = {"name": "p0.1-sft", "status": "ok", "method": "sft", "poison_ratio": 0.1, "alpha": None,
              "harmful_score": 60.0}
    base = {"model": "m", "harmful_score": 50.0, "accuracy": 40.0}
    (folder / "base.json").write_text(json.dumps(base))
    files["cell.json"].write_text(json.dumps(record, indent=1) + "\n")
    files["results.json"].write_text(json.dumps({"runs": [{"safety": {"harmbench": {"judge": "keyword"}}}]}) + "\n")
    if name == "sweep.json":  # a finished sweep; without it the report reads the cells and their results
        files["sweep.json"].write_text(json.dumps({"cells": [record], "base": base}, indent=1) + "\n")
    whole = files[name].read_text()
    for at in json_cuts(whole):
        files[name].write_text(whole[:at])
        one_line_exit_2(invoke("report", folder, "--out", tmp_path / "report"), files[name])
        assert not (tmp_path / "report").exists()


def test_a_cut_jsonl_data_file(tmp_path, tiny_llama_dir, finetune_data):
    from recipes import data_of, write_recipe

    whole = (finetune_data / "harm.jsonl").read_text()
    bad = tmp_path / "harm.jsonl"
    for at in (5, len(whole) // 2 + 3, len(whole) - 4):
        bad.write_text(whole[:at])
        recipe = write_recipe(tmp_path / "r.toml", tiny_llama_dir, data_of(finetune_data, harmful=bad))
        one_line_exit_2(invoke("finetune", recipe, "--output", tmp_path / "out", "--dry-run"), bad)


def test_a_cut_recipe(tmp_path):
    whole = (Path(__file__).parents[1] / "recipes" / "demo-attack.toml").read_text()
    strings = [i for i in range(len(whole)) if whole.startswith(' = "', i) and whole[i + 4] != '"']  # non-empty strings
    for at in (strings[0], strings[len(strings) // 2], strings[-1]):
        text = whole[:at + 6]  # cut inside the value: an unterminated string
        with pytest.raises(tomllib.TOMLDecodeError):
            tomllib.loads(text)
        (tmp_path / "r.toml").write_text(text)
        one_line_exit_2(invoke("recipe", tmp_path / "r.toml"), tmp_path / "r.toml")
