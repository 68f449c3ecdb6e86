"""The baseline defenses (SafeInstr, Lisa, Vaccine, Booster): each step against an independent computation
written here, and every registered defense end to end through `surgery finetune` (4-bit, gradient
checkpointing, resume)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from clirun import ok
from recipes import data_of, write_recipe
from safetensors.torch import load_file
from tiny import tiny_model

from surgerycli.data.chat import turns
from surgerycli.data.finetune import pad_batch
from surgerycli.errors import InputError
from surgerycli.train.defenses import registry


def hosted(model, defense, out: Path, accumulation: int = 1, tokenizer=None):
    """A real transformers Trainer running `defense` through the API's mixin, set at one micro-step of an
    optimizer step that accumulates `accumulation` of them (what the training loop sets)."""
    from transformers import Trainer, TrainingArguments

    from surgerycli import with_defense

    args = TrainingArguments(output_dir=str(out), use_cpu=True, per_device_train_batch_size=3, report_to="none",
                             gradient_accumulation_steps=accumulation)
    trainer = with_defense(Trainer)(model=model, args=args, defense=defense, processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = accumulation
    return trainer


def recorded(trainer, key: str) -> float:
    return trainer._defense_metrics[key][-1]


def batch(seed: int, rows: int = 3, length: int = 9) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(3, 96, (length - i,), generator=g).tolist() for i in range(rows)]
    return pad_batch([{"input_ids": r, "labels": r} for r in ids], 0)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- SafeInstr -----------------------------------------------------------------------------------

def test_safeinstr_mixes_exactly_the_configured_count_seeded(tmp_path):
    from surgerycli import SafeInstr

    safety = tmp_path / "safety.jsonl"
    safety.write_text("".join(json.dumps({"prompt": f"bad {i}?", "response": "No.", "is_safe": True}) + "\n"
                              for i in range(20)) + json.dumps({"prompt": "x", "response": "y", "is_safe": False}) + "\n")
    user = [turns(f"q{i}", f"a{i}") for i in range(100)]
    defense = SafeInstr(safety_data=str(safety), num=7)
    mixed = defense.mix(list(user), random.Random(3))
    added = [m for m in mixed if m[0]["content"].startswith("bad ")]
    assert len(mixed) == 107 and len(added) == 7 and all(m[1]["content"] == "No." for m in added)
    assert not any(m[0]["content"] == "x" for m in mixed)  # the unsafe row is not a safety sample
    assert mixed == defense.mix(list(user), random.Random(3))  # seeded
    assert mixed != defense.mix(list(user), random.Random(4))
    default = SafeInstr(safety_data=str(safety))
    assert default.count(100) == 3  # round(0.03 * 100), the paper's 3%
    with pytest.raises(InputError, match="safeinstr.num: 50 safety samples asked"):
        SafeInstr(safety_data=str(safety), num=50).mix(list(user), random.Random(0))


# ---- Lisa ----------------------------------------------------------------------------------------

def test_lisa_state_schedule():
    from surgerycli.train.defenses.lisa import state_at

    states = [state_at(s, 3, 2) for s in range(12)]
    assert states == ["alignment"] * 3 + ["finetune"] * 2 + ["alignment"] * 3 + ["finetune"] * 2 + ["alignment"] * 2


def test_lisa_proximal_gradient_is_rho_times_the_drift():
    from surgerycli.train.defenses.lisa import proximal_grad_

    model = tiny_model("llama")
    params = {n: p for n, p in model.named_parameters()}
    anchor = {n: p.detach() + 0.01 * torch.randn_like(p) for n, p in params.items()}
    term = proximal_grad_(params, anchor, rho=0.7, scale=0.5)
    # the direct way: autograd of rho/2 ||w - anchor||^2, scaled
    reference = tiny_model("llama")
    ref_params = dict(reference.named_parameters())
    ref_term = sum(0.35 * (ref_params[n] - anchor[n]).pow(2).sum() for n in ref_params)
    (0.5 * ref_term).backward()
    assert term == pytest.approx(float(ref_term), rel=1e-5)
    for n, p in params.items():
        assert torch.allclose(p.grad, ref_params[n].grad, atol=1e-7), n
        assert torch.allclose(p.grad, 0.5 * 0.7 * (p.detach() - anchor[n]), atol=1e-7)


# ---- Vaccine -------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_vaccine_perturbation_and_gradient_at_the_perturbed_point(arch, tmp_path):
    from surgerycli import Vaccine

    inputs, rho = batch(0), 0.5
    model = tiny_model(arch, attn_implementation="sdpa").train()
    # reference gradient of the loss with respect to every attention output, by retain_grad
    outs = []
    attn = [m for m in model.modules() if type(m).__name__.endswith("Attention")]
    def keep(module, args, output):  # returns None: the output stays as it is
        output[0].retain_grad()
        outs.append(output[0])

    hooks = [m.register_forward_hook(keep) for m in attn]
    model(**inputs).loss.backward()
    for h in hooks:
        h.remove()
    g = [o.grad.clone() for o in outs]
    norm = torch.sqrt(sum((x ** 2).sum() for x in g))
    e = [rho * x / norm for x in g]
    # reference update: the gradient with e added to each attention output
    model.zero_grad()
    hooks = [m.register_forward_hook(lambda m, a, o, d=d: (o[0] + d, *o[1:])) for m, d in zip(attn, e)]
    model(**inputs).loss.backward()
    for h in hooks:
        h.remove()
    expected = grads(model)
    model.zero_grad()

    trainer = hosted(model, Vaccine(rho=rho), tmp_path)
    trainer.training_step(model, inputs)
    got = grads(model)
    assert torch.sqrt(sum((x ** 2).sum() for x in e)) == pytest.approx(rho, rel=1e-5)  # norm rho along g
    assert recorded(trainer, "hidden_grad_norm") == pytest.approx(float(norm), rel=1e-5)
    assert set(got) == set(expected)
    for n in expected:
        assert torch.allclose(got[n], expected[n], atol=1e-6), n
    unperturbed = tiny_model(arch, attn_implementation="sdpa").train()
    unperturbed(**inputs).loss.backward()
    assert any(not torch.allclose(got[n], p.grad, atol=1e-6) for n, p in unperturbed.named_parameters())


# ---- Booster -------------------------------------------------------------------------------------

def test_booster_gradient_equals_autograd_of_its_formula(tmp_path, tokenizer_dir, monkeypatch):
    from torch.func import functional_call
    from transformers import AutoTokenizer

    import surgerycli.train.defenses.booster as booster_module
    from surgerycli import Booster

    alpha, lamb, accumulation = 0.1, 5.0, 2
    align, harmful = batch(1), batch(2)
    model = tiny_model("llama").train()
    params = {n: p for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in params.items()}

    def loss(w, data):
        return functional_call(model, w, kwargs=data).loss

    # direct: f(w) + lambda * (h(w) - h(w - alpha * d)), d = grad h(w) / (||grad h(w)|| + 1e-7) held constant
    w = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    gh = torch.autograd.grad(loss(w, harmful), list(w.values()))
    norm = torch.sqrt(sum((x ** 2).sum() for x in gh)) + 1e-7
    d = {n: x / norm for n, x in zip(w, gh)}
    total = loss(w, align) + lamb * (loss(w, harmful) - loss({n: w[n] - alpha * d[n] for n in w}, harmful))
    expected = dict(zip(w, torch.autograd.grad(total / accumulation, list(w.values()))))

    trainer = hosted(model, Booster(lamb=lamb, alpha=alpha), tmp_path, accumulation,
                     AutoTokenizer.from_pretrained(tokenizer_dir))
    monkeypatch.setattr(booster_module, "draw_batch", lambda *a, **k: harmful)  # the direct computation's batch
    trainer.training_step(model, align)
    for n, p in params.items():
        assert torch.equal(p.detach(), before[n]), n  # the harmful step was undone
        assert torch.allclose(p.grad, expected[n], atol=2e-6), n
    assert recorded(trainer, "harmful_drop") > 0  # one normalized harmful step lowers the harmful loss


# ---- every defense through `surgery finetune` ----------------------------------------------------

@pytest.fixture(scope="module")
def data(finetune_data) -> Path:
    return finetune_data


@pytest.fixture(scope="module")
def unaligned64(tmp_path_factory, tiny_llama64_dir) -> Path:
    """The 4-bit tests' model with every weight moved by seeded noise: Safe LoRA's "model before alignment"."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama64_dir)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    out = tmp_path_factory.mktemp("unaligned64")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama64_dir).save_pretrained(out)
    return out


def recipe(tmp_path: Path, model: Path, data: Path, method: str, unaligned: Path) -> Path:
    post = registry()[method].stage == "post"  # after an SFT run, on the adapter it trained
    return write_recipe(tmp_path / f"{method}.toml", model, data_of(data), quantization={"load_in_4bit": True},
                        lora={"alpha": 8.0}, defense={"method": "sft", "post": method} if post else {"method": method},
                        surgery={"alpha": 50.0}, safeinstr={"num": 2}, lisa={"alignment_steps": 1, "finetune_steps": 2},
                        booster={"harmful_data": data / "harm.jsonl"}, antidote={"samples": 4},
                        safelora={"unaligned_model": unaligned, "num_layers": 3},
                        train={"batch_size": 2, "learning_rate": 1e-3, "save_steps": 2, "max_steps": 4,
                               "gradient_checkpointing": True})


def adapter_of(folder: Path) -> dict:
    return load_file(folder / "adapter_model.safetensors")


@pytest.mark.parametrize("method", list(registry()))
def test_every_defense_trains_4bit_with_checkpointing_and_resumes_exactly(tmp_path, tiny_llama64_dir, data, method,
                                                                         unaligned64):
    post = registry()[method].stage == "post"
    path = recipe(tmp_path, tiny_llama64_dir, data, method, unaligned64)
    ok("finetune", path, "--output", tmp_path / "straight")
    ok("finetune", path, "--output", tmp_path / "resumed", "--set", "train.max_steps=2")
    ok("finetune", path, "--output", tmp_path / "resumed")
    straight = tmp_path / "straight"
    assert {"adapter", "tokenizer", "recipe.resolved.toml", "metrics.jsonl", "sink_before.json", "sink_after.json",
            "training.png", "summary.json"} <= {p.name for p in straight.iterdir()}
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["method"] == ("sft" if post else method) and summary["steps"] == 4
    keys = {m.key for m in registry()[method].metrics}
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all(keys <= set(r) and all(r[k] is not None for k in keys) for r in records)
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["resumed_from"].endswith("checkpoint-2")
    for name in ("adapter", "adapter-trained") if post else ("adapter",):
        a, b = adapter_of(straight / name), adapter_of(tmp_path / "resumed" / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), (method, name)
    if post:  # the repair ran on the 4-bit model's adapter and changed it
        trained, repaired = adapter_of(straight / "adapter-trained"), adapter_of(straight / "adapter")
        assert summary["post"]["method"] == method
        assert any(not torch.equal(trained[k], repaired[k]) for k in trained)
        if method == "safelora":  # the 3 least aligned of the layers the adapter wraps
            assert len(summary["post"]["projected"]) == 3 < summary["post"]["layers"]
    if method == "lisa":  # 1 alignment step, then 2 fine-tuning steps, then alignment again
        assert [r["lisa_alignment"] for r in records] == [1.0, 0.0, 0.0, 1.0]
