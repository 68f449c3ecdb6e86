"""The Python API: any defense inside a user's own Trainer (`with_defense`), against `surgery finetune`, the
host's attention and logging, resume, refusals, and the shipped examples."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from clirun import ok
from recipes import write_recipe
from safetensors.torch import load_file
from tiny import tiny_model

from surgerycli.errors import InputError
from surgerycli.train.defenses import registry

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("refs")
    (d / "harm.jsonl").write_text("".join(json.dumps({"prompt": f"How do I build weapon {i} at home?"}) + "\n"
                                          for i in range(4)))
    (d / "safe.jsonl").write_text("".join(json.dumps({"prompt": f"How do I bake bread number {i} at home?"}) + "\n"
                                          for i in range(4)))
    return d / "harm.jsonl", d / "safe.jsonl"


def tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def rows(tok, n: int = 12) -> list[dict]:
    from surgerycli.data.chat import turns
    from surgerycli.data.finetune import tokenize_example

    return [tokenize_example(tok, turns(f"What is {i} + 3?", f"{i} + 3 = {i + 3}"), 64) for i in range(n)]


def trainer_args(out: Path, **extra):
    from transformers import TrainingArguments

    return TrainingArguments(**{"output_dir": str(out), "use_cpu": True, "per_device_train_batch_size": 2,
                                "max_steps": 2, "logging_steps": 1, "learning_rate": 1e-3, "report_to": "none",
                                "save_strategy": "no", **extra})


def plain_trainer(model, tok, out: Path, defense, dataset=None, **extra):
    from transformers import Trainer

    from surgerycli import with_defense
    from surgerycli.data.finetune import pad_batch

    return with_defense(Trainer)(model=model, args=trainer_args(out, **extra), train_dataset=dataset or rows(tok),
                                 processing_class=tok, data_collator=lambda b: pad_batch(b, tok.pad_token_id),
                                 defense=defense)


def test_defense_objects_validate_as_the_recipe_does(refs):
    from surgerycli import Lisa, SafeInstr, Surgery

    s = Surgery(alpha=300, harmful_reference=str(refs[0]))
    assert (s.options.alpha, s.options.reference_batch_size, s.measure.sink_position) == (300.0, 1, 0)
    assert s.measure.harmful_reference == str(refs[0].resolve())
    with pytest.raises(InputError, match=r'^Surgery: surgery.alpha: expected a number >= 0, got -1; '
                                         r'measure.harmful_reference: no such file or dataset folder'):
        Surgery(alpha=-1, harmful_reference="nowhere.jsonl")
    with pytest.raises(InputError, match=r"^Lisa: unknown option 'harmful_reference' \(expected one of alignment_data"):
        Lisa(harmful_reference=str(refs[0]))  # Lisa measures nothing: [measure] keys are Surgery's
    assert SafeInstr().options.num is None and Lisa().options.rho == 1.0  # the recipe's defaults
    from surgerycli import with_defense

    with pytest.raises(TypeError, match="expected a transformers.Trainer subclass"):
        with_defense(dict)


@pytest.mark.parametrize("method", [n for n, c in registry().items() if c.stage != "post"])  # post: test_post.py
def test_every_defense_trains_through_a_plain_trainer_and_logs_its_metrics(tmp_path, tiny_llama_dir, refs, method):
    from surgerycli import registry as api_registry

    cls = api_registry()[method]
    options = {"surgery": {"alpha": 50.0, "harmful_reference": str(refs[0]), "harmless_reference": str(refs[1])},
               "safeinstr": {"num": 3}, "lisa": {"alignment_steps": 1, "finetune_steps": 1}}.get(method, {})
    tok = tokenizer(tiny_llama_dir)
    model = tiny_model("llama", vocab_size=len(tok))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = plain_trainer(model, tok, tmp_path, cls(**options))
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert len(logs) == 2
    for metric in cls.metrics:
        assert all(isinstance(r.get(metric.key), float) for r in logs), (method, metric.key, logs)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    if method == "safeinstr":  # appended to the host's dataset, and said so
        assert len(trainer.train_dataset) == 12 + 3 and logs[0]["safety_samples"] == 3.0
        from transformers import Trainer

        from surgerycli import with_defense

        with pytest.raises(TypeError, match="pass it .* by keyword"):  # a positional dataset would escape the mix
            with_defense(Trainer)(model, trainer_args(tmp_path), None, rows(tok), defense=cls(**options))
    if method == "lisa":
        assert [r["lisa_alignment"] for r in logs] == [1.0, 0.0]
    if method == "surgery":
        assert logs[0]["sink_loss"] > 0


def test_one_defense_object_serves_two_trainers_alike(tmp_path, tiny_llama_dir, refs):
    """A defense is a value: the same SafeInstr mixes its safety samples into both trainers' data, and the
    same Lisa starts both runs from its own fresh state (neither run sees the other's anchors)."""
    from surgerycli import Lisa, SafeInstr

    tok = tokenizer(tiny_llama_dir)
    safeinstr, lisa = SafeInstr(num=3), Lisa(alignment_steps=1, finetune_steps=1)
    for run in ("first", "second"):
        trainer = plain_trainer(tiny_model("llama", vocab_size=len(tok)), tok, tmp_path / run, safeinstr)
        user = {tuple(r["input_ids"]) for r in rows(tok)}
        assert len(trainer.train_dataset) == 12 + 3, run
        assert sum(tuple(r["input_ids"]) not in user for r in trainer.train_dataset) == 3, run
        trainer.train()
        assert [r["safety_samples"] for r in trainer.state.log_history if "loss" in r] == [3.0, 3.0], run
        trainer = plain_trainer(tiny_model("llama", vocab_size=len(tok), seed=1), tok, tmp_path / f"lisa-{run}", lisa)
        trainer.train()
        assert trainer.defense is not lisa and trainer.defense.last_state == "finetune", run
    assert lisa.anchors == {} and lisa.last_state is None  # the object passed in was never trained with


def test_the_sft_pass_keeps_the_hosts_attention_implementation(tmp_path, tiny_llama_dir, refs):
    from surgerycli import Surgery
    from surgerycli.patches import SINK_ATTENTION

    tok = tokenizer(tiny_llama_dir)
    model = tiny_model("llama", attn_implementation="eager", vocab_size=len(tok))
    seen = []
    first = model.model.layers[0].self_attn
    first.register_forward_pre_hook(lambda m, a: seen.append((m.config._attn_implementation, torch.is_grad_enabled())))
    trainer = plain_trainer(model, tok, tmp_path, Surgery(alpha=50.0, harmful_reference=str(refs[0]),
                                                          harmless_reference=str(refs[1])))
    trainer.train()
    # per step: the host's SFT forward in its own (eager) attention, then the reference forward in the sink one
    assert [impl for impl, _ in seen] == ["eager", SINK_ATTENTION] * 2
    assert model.config._attn_implementation == "eager"


def test_refuses_where_the_sink_cannot_be_captured(tmp_path, tiny_llama_dir, refs, monkeypatch):
    from transformers import AttentionInterface, GPT2Config, GPT2LMHeadModel
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from surgerycli import Surgery
    from surgerycli.patches import SINK_ATTENTION

    tok = tokenizer(tiny_llama_dir)
    surgery = dict(alpha=50.0, harmful_reference=str(refs[0]), harmless_reference=str(refs[1]))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok)))
    with pytest.raises(InputError, match=r"^Surgery: the sink statistic cannot be captured on this model \(unsupported "
                                         r"model_type 'gpt2'"):
        plain_trainer(gpt2, tok, tmp_path, Surgery(**surgery))
    # an attention kernel that bypasses the sink attention (as a kernel patch would): refused, not plain SFT
    monkeypatch.setitem(AttentionInterface._global_mapping, SINK_ATTENTION, sdpa_attention_forward)
    trainer = plain_trainer(tiny_model("llama", vocab_size=len(tok)), tok, tmp_path, Surgery(**surgery))
    with pytest.raises(InputError, match=r"^Surgery: 0 of 2 attention layers went through the sink attention"):
        trainer.train()


def test_deepspeed_fsdp1_and_other_engines_are_refused(tmp_path, tiny_llama_dir):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from surgerycli import SFT

    tok = tokenizer(tiny_llama_dir)
    trainer = plain_trainer(tiny_model("llama", vocab_size=len(tok)), tok, tmp_path, SFT())
    state = trainer.accelerator.state
    state.fsdp_plugin = SimpleNamespace(fsdp_version=1)
    try:
        for kind, words in ((DistributedType.DEEPSPEED, "^DeepSpeed: not supported with a defense"),
                            (DistributedType.FSDP, "^FSDP1: not supported with a defense; set fsdp_config.version = 2"),
                            (DistributedType.MEGATRON_LM, "^accelerate distributed_type MEGATRON_LM: a defense runs")):
            state.distributed_type = kind
            with pytest.raises(InputError, match=words):
                trainer._check_engine()
        state.distributed_type, state.fsdp_plugin = DistributedType.FSDP, SimpleNamespace(fsdp_version=2)
        trainer._check_engine()  # FSDP2 with a defense that runs sharded
        trainer.defense.not_sharded = "it takes gradients with torch.autograd.grad"  # a defense that says it cannot
        with pytest.raises(InputError, match="^SFT with FSDP: it takes gradients with torch.autograd.grad; use DDP"):
            trainer._check_engine()
    finally:
        state.distributed_type, state.fsdp_plugin = DistributedType.NO, None


def test_defense_state_travels_in_checkpoints_and_a_resume_is_exact(tmp_path, tiny_llama_dir):
    from surgerycli import Lisa

    tok = tokenizer(tiny_llama_dir)

    def run(out: Path, steps: int, resume: bool = False) -> dict:
        model = tiny_model("llama", vocab_size=len(tok))
        trainer = plain_trainer(model, tok, out, Lisa(alignment_steps=1, finetune_steps=2, warmup=0.0), max_steps=4,
                                save_strategy="steps", save_steps=2)
        if steps < 4:  # stop after the checkpoint, as a killed run would
            from transformers import TrainerCallback

            class Stop(TrainerCallback):
                def on_step_end(self, args, state, control, **kwargs):
                    control.should_training_stop = state.global_step >= steps

            trainer.add_callback(Stop())
        trainer.train(resume_from_checkpoint=resume or None)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    straight = run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    state = torch.load(tmp_path / "resumed" / "checkpoint-2" / "defense_state.pt", weights_only=True)
    assert state["last_state"] == "finetune" and set(state["anchors"]) == {"alignment", "finetune"}
    resumed = run(tmp_path / "resumed", 4, resume=True)
    assert all(torch.equal(straight[n], resumed[n]) for n in straight)


def test_trl_sft_trainer_with_surgery_equals_surgery_finetune(tmp_path, tiny_llama_dir, finetune_data, refs):
    """The same data, seed and hyperparameters through `surgery finetune` and through TRL's SFTTrainer with
    the API: the same tokens, the same adapter."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    from surgerycli import Surgery, with_defense
    from surgerycli.train.builders import build_dataset, build_defense, build_examples
    from surgerycli.train.recipe import load_recipe

    path = write_recipe(tmp_path / "r.toml", tiny_llama_dir,
                        {"benign": finetune_data / "gsm.jsonl", "poison_ratio": 0.0, "num_samples": 8},
                        lora={"alpha": 8.0, "dropout": 0.0}, surgery={"alpha": 50.0},
                        measure={"harmful_reference": refs[0], "harmless_reference": refs[1], "samples": 0},
                        train={"batch_size": 2, "max_steps": 3, "learning_rate": 0.05, "max_grad_norm": 0.0,
                               "gradient_checkpointing": False}, trainer={"optim": "sgd"})
    ok("finetune", path, "--output", tmp_path / "cli")
    cli = load_file(tmp_path / "cli" / "adapter" / "adapter_model.safetensors")

    recipe = load_recipe(path)
    mix, _, _ = build_examples(recipe.data, recipe.train.seed, build_defense(recipe))
    dataset = Dataset.from_list([{"prompt": chat[:-1], "completion": chat[-1:]} for chat in mix])
    tok = tokenizer(tiny_llama_dir)
    set_seed(recipe.train.seed)  # as `surgery finetune` draws the LoRA matrices
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))
    args = SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=3, per_device_train_batch_size=2, learning_rate=0.05,
                     lr_scheduler_type="constant", max_grad_norm=0.0, optim="sgd", seed=42, data_seed=42, max_length=64,
                     logging_steps=1, report_to="none", use_cpu=True, gradient_checkpointing=False, bf16=False,
                     save_strategy="no")
    trainer = with_defense(SFTTrainer)(model=model, args=args, train_dataset=dataset, processing_class=tok,
                                       defense=Surgery(alpha=50.0, harmful_reference=str(refs[0]),
                                                       harmless_reference=str(refs[1])))
    ours = build_dataset(tok, mix, "", 64)
    assert [r["input_ids"] for r in trainer.train_dataset] == [r["input_ids"] for r in ours]  # the premise
    assert [r["labels"] for r in trainer.train_dataset] == [r["labels"] for r in ours]
    trainer.train()
    logged = [r for r in trainer.state.log_history if "loss" in r]
    assert len(logged) == 3 and all(r["sink_loss"] > 0 and "mean_token_accuracy" in r for r in logged)
    trainer.save_model(str(tmp_path / "trl-adapter"))
    api = load_file(tmp_path / "trl-adapter" / "adapter_model.safetensors")
    assert api.keys() == cli.keys()
    worst = max(float((api[k] - cli[k]).abs().max()) for k in cli)
    moved = max(float(cli[k].abs().max()) for k in cli if "lora_B" in k)
    assert worst < 1e-6 and moved > 0, (worst, moved)


@pytest.mark.parametrize("script", ["trainer_lora.py", "trl_sft.py"])
def test_the_examples_train_with_surgery(tmp_path, tiny_llama_dir, monkeypatch, script):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                                     {"role": "assistant", "content": f"{i + 1}"}]}) + "\n"
                            for i in range(8)))
    monkeypatch.setattr(sys, "argv", [script, str(tiny_llama_dir), str(data), str(tmp_path / "out"), "2"])
    scope = runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")
    logged = [r for r in scope["trainer"].state.log_history if "loss" in r]
    assert len(logged) == 2 and all("sink_loss" in r and "positive_heads" in r for r in logged)
    assert (tmp_path / "out" / ("adapter_model.safetensors" if script == "trainer_lora.py" else "model.safetensors")).is_file()


def test_two_processes_through_the_api_equal_one(tmp_path, tiny_llama_dir):
    import os
    import subprocess

    for name, text in (("harm", "How do I build a weapon at home?"), ("safe", "How do I bake bread at home?")):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"prompt": text}) + "\n")
    script = str(Path(__file__).parent / "api_ddp.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = {"one": [sys.executable, script], "two": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                       "--nproc-per-node", "2", script]}
    for name, batch in (("one", "4"), ("two", "2")):
        proc = subprocess.run([*launch[name], str(tiny_llama_dir), str(tmp_path), str(tmp_path / name), batch],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    a, b = (load_file(tmp_path / n / "adapter_model.safetensors") for n in ("one", "two"))
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float(a[k].abs().max()) for k in a if "lora_B" in k)
    assert a.keys() == b.keys() and worst < 1e-5 and moved > 0, (worst, moved)
