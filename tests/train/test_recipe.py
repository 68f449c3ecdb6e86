"""Recipe validation, overrides and TOML output; every shipped recipe loads."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from surgerycli.errors import InputError
from surgerycli.train.recipe import dump_recipe, load_recipe, parse_override, schema

RECIPE_DIR = Path(__file__).parents[2] / "recipes"
RECIPES = sorted(RECIPE_DIR.glob("*.toml"))


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    (tmp_path / "gsm.jsonl").write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n')
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = '[model]\nname = "{model}"\n[data]\nbenign = "{data}"\npoison_ratio = 0.0\n'


def minimal(tmp_path, tiny_llama_dir, extra: str = "") -> Path:
    return write(tmp_path, MINIMAL.format(model=tiny_llama_dir, data=tmp_path / "gsm.jsonl") + extra)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path, check_files=False)
    assert set(recipe.sections()) == set(schema())
    raw = tomllib.loads(path.read_text())
    assert all(key in schema()[s].model_fields for s in raw for key in raw[s])  # nothing silently ignored
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any("surgery " in line for line in header[:12]), "the header says how to run the recipe"


def test_the_shipped_recipes_include_each_supported_family_and_the_cpu_one():
    names = {p.stem for p in RECIPES}
    assert {"llama3-8b-surgery", "llama3-8b-sft", "mistral-7b-surgery", "qwen2.5-7b-surgery",
            "gemma2-9b-surgery", "smollm2-cpu-surgery"} <= names


@pytest.mark.parametrize("tail", ["", "-full"])
def test_sft_twin_differs_only_in_the_defense_method(tail):
    surgery = load_recipe(RECIPE_DIR / f"llama3-8b-surgery{tail}.toml", check_files=False)
    sft = load_recipe(RECIPE_DIR / f"llama3-8b-sft{tail}.toml", check_files=False)
    assert surgery.defense.method == "surgery" and sft.defense.method == "sft"
    assert dataclasses.replace(surgery, defense=sft.defense, output=sft.output) == sft


def test_full_recipe_is_the_papers_setting():
    r = load_recipe(RECIPE_DIR / "llama3-8b-surgery-full.toml", check_files=False)
    s = r.methods["surgery"]
    assert not r.lora.enabled and not r.quantization.load_in_4bit and r.model.dtype == "bfloat16"
    assert (r.train.learning_rate, r.train.lr_scheduler, r.train.epochs, r.train.batch_size) == (5e-6, "constant", 5.0, 10)
    assert (r.data.num_samples, r.data.system_prompt, r.train.max_length) == (1000, "You are a helpful assistant.", 1024)
    m = r.measure
    assert (s.alpha, m.sink_position, m.reference_rows, m.max_length, s.reference_batch_size) == (300.0, 0, "first", 512, 1)


def test_defaults_filled_and_round_trip(tmp_path, tiny_llama_dir):
    recipe = load_recipe(minimal(tmp_path, tiny_llama_dir))
    assert recipe.methods["surgery"].alpha == 300.0 and recipe.lora.target_modules == "all-linear"
    assert recipe.defense.method == "surgery" and recipe.options is recipe.methods["surgery"]
    assert recipe.train.max_steps is None
    assert recipe.output.dir == "out/r"  # from the recipe's file name
    assert recipe.model.dtype == "float32" and recipe.quantization.load_in_4bit is False  # no GPU
    again = write(tmp_path, dump_recipe(recipe), "again.toml")
    assert load_recipe(again) == recipe


def test_every_problem_is_listed_with_its_key_path(tmp_path, tiny_llama_dir):
    path = minimal(tmp_path, tiny_llama_dir, (
        '[surgery]\nalpha = "high"\nreference_batch_size = 0\nalhpa = 1\n'
        '[train]\nlearning_rate = -1\ngradient_checkpointing = 1\nlr_scheduler = "warp"\n'
        '[lora]\ntarget_modules = []\n[extra]\nx = 1\n'
    ))
    with pytest.raises(InputError) as e:
        load_recipe(path, ["data.poison_ratio=1.5", "data.harmful=missing.jsonl"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: 10 problems: ")
    for part in (
        'surgery.alpha: expected a number >= 0, got "high"',
        "surgery.reference_batch_size: expected an integer >= 1, got 0",
        "surgery.alhpa: unknown key",
        "train.learning_rate: expected a number >= 0, got -1",
        "train.gradient_checkpointing: expected true or false, got 1",
        'train.lr_scheduler: expected one of "constant"',
        'lora.target_modules: expected "all-linear" or a non-empty list',
        "extra: unknown section",
        "data.poison_ratio: expected a number >= 0 and <= 1, got 1.5",
        'data.harmful: no such file or dataset folder, got "missing.jsonl"',
    ):
        assert part in msg, part


def test_missing_required_and_cross_checks(tmp_path, tiny_llama_dir):
    with pytest.raises(InputError, match=r"model.name: required, missing; data.benign: required, missing"):
        load_recipe(write(tmp_path, "[train]\nseed = 1\n"))
    path = minimal(tmp_path, tiny_llama_dir)
    with pytest.raises(InputError, match=r"data.harmful: required when data.poison_ratio > 0"):
        load_recipe(path, ["data.poison_ratio=0.1"])
    with pytest.raises(InputError, match=r"model.name: no such .gguf file"):
        load_recipe(path, ["model.name=nowhere/m.gguf"])
    with pytest.raises(InputError, match="not valid TOML"):
        load_recipe(write(tmp_path, "[model\n"))


def test_overrides_and_output(tmp_path, tiny_llama_dir):
    assert parse_override("surgery.alpha=0") == ("surgery", "alpha", 0)
    assert parse_override("model.name=org/model") == ("model", "name", "org/model")  # bare word
    assert parse_override('lora.target_modules=["q_proj", "v_proj"]')[2] == ["q_proj", "v_proj"]
    with pytest.raises(InputError, match="expected section.key=value"):
        parse_override("alpha=3")
    recipe = load_recipe(minimal(tmp_path, tiny_llama_dir), ["surgery.alpha=0.5", "train.max_steps=3"], output="o")
    assert recipe.methods["surgery"].alpha == 0.5 and recipe.train.max_steps == 3
    assert recipe.output.dir == "o"
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.train = None
    with pytest.raises(ValueError):  # sections are frozen too
        recipe.train.seed = 1


def test_defense_section_picks_a_registered_method(tmp_path, tiny_llama_dir):
    path = minimal(tmp_path, tiny_llama_dir)
    assert load_recipe(path, ["defense.method=sft"]).defense.method == "sft"
    with pytest.raises(InputError, match=r'defense.method: unknown method "nosuch" \(expected one of sft, surgery'):
        load_recipe(path, ["defense.method=nosuch"])
    legacy = minimal(tmp_path, tiny_llama_dir, "[surgery]\nenabled = false\n")
    with pytest.raises(InputError, match=r"1 problem: surgery.enabled: removed: choose the method with \[defense\] method"):
        load_recipe(legacy)


def test_a_moved_measurement_key_says_where_it_went(tmp_path, tiny_llama_dir):
    old = minimal(tmp_path, tiny_llama_dir, "[surgery]\nalpha = 3.0\nmeasure_samples = 4\nsink_position = 1\n")
    with pytest.raises(InputError) as e:
        load_recipe(old)
    assert str(e.value).endswith("2 problems: surgery.measure_samples: moved: [measure] samples (the sink measurement's "
                                 "settings, for every method); surgery.sink_position: moved: [measure] sink_position "
                                 "(the sink measurement's settings, for every method)")
    new = load_recipe(minimal(tmp_path, tiny_llama_dir, "[measure]\nsamples = 4\nsink_position = 1\n"))
    assert (new.measure.samples, new.measure.sink_position) == (4, 1)


def test_shipped_accelerate_configs_load_and_say_how_to_run():
    from accelerate.commands.config.config_args import ClusterConfig

    configs = sorted((RECIPE_DIR / "accelerate").glob("*.yaml"))
    assert configs
    for path in configs:
        config = ClusterConfig.from_yaml_file(str(path))  # accelerate's own reader, as `accelerate launch` reads it
        kind = str(config.distributed_type).removeprefix("DistributedType.")
        assert kind == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}[path.stem], path
        if kind == "FSDP":  # FSDP1 is refused with a defense
            assert config.fsdp_config["fsdp_version"] == 2, path
        assert "accelerate launch --config_file recipes/accelerate/" in path.read_text(), path
