"""`train.report_to` (a tracker gets the defense's metrics; TensorBoard, offline) and the `[trainer]`
passthrough to TrainingArguments."""

from __future__ import annotations

import json

import pytest
import torch

from clirun import invoke
from recipes import data_of, write_recipe
from surgerycli.train.builders import build_training_args
from surgerycli.train.recipe import load_recipe


def recipe_file(tmp_path, model, data, train: dict | None = None, trainer: dict | None = None):
    return write_recipe(tmp_path / "r.toml", model, data_of(data, poison_ratio=0.25, num_samples=8),
                        surgery={"alpha": 50.0}, train=train or {}, **({"trainer": trainer} if trainer else {}))


def test_tensorboard_gets_the_sink_loss(tmp_path, tiny_llama_dir, finetune_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = recipe_file(tmp_path, tiny_llama_dir, finetune_data, {"report_to": "tensorboard", "run_name": "tb-test"})
    out = tmp_path / "out"
    result = invoke("finetune", path, "--output", out)
    assert result.exit_code == 0, result.output
    events = list(out.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file under the output folder"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    sink = acc.Scalars("train/sink_loss")
    assert [e.step for e in sink] == [r["step"] for r in logged]
    assert [e.value for e in sink] == pytest.approx([r["sink_loss"] for r in logged], rel=1e-6)
    assert "train/positive_heads" in acc.Tags()["scalars"]


def test_a_missing_tracker_package_is_one_line(tmp_path, tiny_llama_dir, finetune_data):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    result = invoke("finetune", recipe_file(tmp_path, tiny_llama_dir, finetune_data, {"report_to": "wandb"}), "--dry-run")
    assert result.exit_code == 2 and "train.report_to: \"wandb\" needs the wandb package" in result.output


def test_trainer_table_reaches_training_arguments(tmp_path, tiny_llama_dir, finetune_data):
    trainer = {"optim": "adafactor", "dataloader_num_workers": 1, "lr_scheduler_kwargs": {"num_cycles": 2}}
    recipe = load_recipe(recipe_file(tmp_path, tiny_llama_dir, finetune_data, trainer=trainer))
    args = build_training_args(recipe.train, tmp_path / "o", torch.device("cpu"), "float32", recipe.trainer)
    assert args.optim == "adafactor" and args.dataloader_num_workers == 1
    assert args.lr_scheduler_kwargs == {"num_cycles": 2}
    # the resolved recipe keeps the table, and reads back to the same recipe
    from surgerycli.train.recipe import dump_recipe

    resolved = tmp_path / "resolved.toml"
    resolved.write_text(dump_recipe(recipe))
    assert load_recipe(resolved).trainer == recipe.trainer


@pytest.mark.parametrize("trainer, message", [
    ({"bogus": 1}, "trainer.bogus: not a transformers TrainingArguments field"),
    ({"optim": "nope"}, "trainer.optim: expected one of adamw_torch"),
    ({"torch_compile": "yes"}, "trainer.torch_compile: expected true or false"),
    ({"learning_rate": 1e-3}, "trainer.learning_rate: set by the recipe, not [trainer]: use train.learning_rate"),
    ({"per_device_train_batch_size": 2}, "use train.batch_size"),
])
def test_bad_trainer_keys_are_refused(tmp_path, tiny_llama_dir, finetune_data, trainer, message):
    result = invoke("finetune", recipe_file(tmp_path, tiny_llama_dir, finetune_data, trainer=trainer), "--output",
                    tmp_path / "o")
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="tf32 is valid on an Ampere GPU")
def test_what_only_the_machine_can_judge_fails_before_any_output(tmp_path, tiny_llama_dir, finetune_data):
    """tf32 passes the type check (a GPU recipe stays valid on a CPU machine) and fails at TrainingArguments."""
    path = recipe_file(tmp_path, tiny_llama_dir, finetune_data, trainer={"tf32": True})
    assert load_recipe(path).trainer == {"tf32": True}
    result = invoke("finetune", path, "--output", tmp_path / "o")
    assert result.exit_code == 2 and "trainer.tf32:" in result.output and "Ampere" in result.output, result.output
    assert not (tmp_path / "o").exists()
