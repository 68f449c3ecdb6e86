"""The post-fine-tuning defenses against hand computations (Antidote's Wanda scores and mask, Safe LoRA's
projection of one layer), `surgery finetune` with `defense.post`, and chains of defenses in a sweep."""

from __future__ import annotations

import json
import math

import pytest
import torch
from clirun import invoke, ok
from recipes import data_of, write_recipe
from tiny import tiny_model

from surgerycli.train.defenses import RepairContext
from surgerycli.train.defenses.antidote import Antidote, input_norms, prune_mask, target_modules, wanda_scores
from surgerycli.train.defenses.safelora import SafeLoRA, chosen, lora_layers, projection, similarity


def lora_model(seed: int = 0, **config):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama", seed=seed, **config),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a trained adapter: B is no longer zero
            p.data = torch.randn(p.shape, generator=g) * 0.3
    return model.eval()


def test_antidote_scores_and_mask_equal_a_hand_computation(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = lora_model(vocab_size=len(tok))
    rows = [[5, 9, 17, 33, 60], [7, 8, 90, 4]]
    modules = target_modules(model)
    assert sorted(modules)[0].endswith("layers.0.self_attn.q_proj.lora_A.default") and len(modules) == 2 * 2 * 2
    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default"
    # by hand: lora_A of layer 0's q_proj reads the first layer's normed embeddings; ||X_j|| over every token
    base = model.get_base_model()
    with torch.no_grad():
        x = torch.cat([base.model.layers[0].input_layernorm(base.model.embed_tokens(torch.tensor(r))) for r in rows])
    norm = x.double().pow(2).sum(0).sqrt()  # (in,)
    scores = wanda_scores(modules, input_norms(model, modules, rows))
    w = modules[name].weight.detach().double()
    i, j = 2, 5
    assert math.isclose(float(scores[name][i, j]), abs(float(w[i, j])) * float(norm[j]), rel_tol=1e-9)
    # each row prunes cols - floor(cols x 0.9): 32 - 28 = 4 weights, the 4 of highest score
    mask = prune_mask(scores[name], 0.1)
    for row in range(mask.shape[0]):
        top = set(torch.topk(scores[name][row], 4).indices.tolist())
        assert set(mask[row].nonzero().flatten().tolist()) == top
    before = {n: m.weight.detach().clone() for n, m in modules.items()}
    info = Antidote(realignment_data="builtin:harmful", samples=3).repair(
        model, RepairContext(tok, seed=0, max_length=32))
    after = modules[name].weight.detach()
    assert info["modules"] == 8 and info["samples"] == 3
    pruned = after == 0
    assert ((before[name] != 0) & pruned).sum() == 4 * after.shape[0]  # exactly the masked weights went to zero
    assert torch.equal(after[~pruned], before[name][~pruned])  # the others are untouched


def test_antidote_on_full_weights_scores_the_attention_projections_only():
    model = tiny_model("llama")
    assert sorted({n.rpartition(".")[2] for n in target_modules(model)}) == ["k_proj", "q_proj", "v_proj"]


def test_safe_lora_projects_one_layer_by_hand_and_leaves_one_above_the_threshold(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    unaligned = tiny_model("llama", seed=0)
    unaligned.save_pretrained(tmp_path / "unaligned")  # the model before alignment, as SafeLoRA loads it
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / "unaligned")
    model = lora_model(seed=0)
    g = torch.Generator().manual_seed(7)
    for layer in model.get_base_model().model.layers:  # the alignment's own update of each adapted weight
        for proj in (layer.self_attn.q_proj, layer.self_attn.v_proj):
            proj.base_layer.weight.data += torch.randn(proj.base_layer.weight.shape, generator=g) * 0.05
    layers = lora_layers(model)
    assert sorted(layers) == [f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
    name = "model.layers.0.self_attn.q_proj"
    w_al = layers[name].base_layer.weight.detach().double()
    w_un = dict(unaligned.named_modules())[name].weight.detach().double()
    v = w_al - w_un
    c = v @ v.T / torch.sqrt((v ** 2).sum())  # by hand: V V^T / ||V||_F
    assert torch.allclose(projection(w_al, w_un), c, atol=1e-12)
    a, b = (layers[name].lora_A["default"].weight.detach().double(), layers[name].lora_B["default"].weight.detach().double())
    update = b @ a
    cos = float((c @ update).flatten() @ update.flatten() / ((c @ update).norm() * update.norm()))
    assert similarity(c, b, a) == round(cos, 5)
    cosines = {n: similarity(projection(l.base_layer.weight.detach(), dict(unaligned.named_modules())[n].weight.detach()),
                             l.lora_B["default"].weight.detach(), l.lora_A["default"].weight.detach())
               for n, l in layers.items()}
    ranked = sorted(cosines, key=cosines.get)
    threshold = (cosines[ranked[1]] + cosines[ranked[2]]) / 2  # two layers under, two over
    assert chosen(cosines, "threshold", 10, threshold) == set(ranked[:2])
    assert chosen(cosines, "number", 1, 0.5) == {ranked[0]}
    originals = {n: l.lora_B["default"].weight.detach().clone() for n, l in layers.items()}
    info = SafeLoRA(unaligned_model=str(tmp_path / "unaligned"), select="threshold", threshold=threshold).apply(model, None)
    assert info["projected"] == sorted(ranked[:2])
    for n, l in layers.items():
        b_new = l.lora_B["default"].weight.detach()
        if n in ranked[:2]:
            p = projection(l.base_layer.weight.detach(), dict(unaligned.named_modules())[n].weight.detach())
            assert torch.allclose(b_new.double(), p @ originals[n].double(), atol=1e-6)
        else:
            assert torch.equal(b_new, originals[n])  # above the threshold: as it was


def test_finetune_with_a_post_defense_keeps_the_trained_adapter_and_saves_the_repaired(tmp_path, tiny_llama_dir,
                                                                                        finetune_data):
    from safetensors.torch import load_file

    recipe = write_recipe(tmp_path / "r.toml", tiny_llama_dir, data_of(finetune_data), defense={"method": "sft",
                          "post": "antidote"}, antidote={"samples": 4}, measure={"samples": 2})
    out = tmp_path / "out"
    ok("finetune", recipe, "--output", out)
    trained = load_file(out / "adapter-trained" / "adapter_model.safetensors")
    repaired = load_file(out / "adapter" / "adapter_model.safetensors")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["post"]["method"] == "antidote" and summary["post"]["pruned"] > 0
    zeroed = sum(int(((trained[k] != 0) & (repaired[k] == 0)).sum()) for k in trained)
    assert zeroed == summary["post"]["pruned"]  # exactly the pruned weights differ
    for key, bad in (("defense.method=antidote", "a post-fine-tuning defense goes in defense.post"),
                     ("defense.post=lisa", "defense.post: expected a post-fine-tuning defense")):
        result = invoke("finetune", recipe, "--output", tmp_path / "x", "--set", key)
        assert result.exit_code == 2 and bad in result.output, result.output


@pytest.mark.slow
def test_a_sweep_of_chains_runs_each_stage_once_per_chain(tmp_path, sweep_recipe, demo_data):
    align = write_recipe(tmp_path / "align.toml", sweep_recipe.read_text().split('name = "')[1].split('"')[0],
                         {"benign": demo_data / "arithmetic_train.jsonl", "poison_ratio": 0.0, "num_samples": 8},
                         measure={"samples": 0})
    out = tmp_path / "sweep"
    ok("sweep", sweep_recipe, "--out", out, "--align-recipe", align, "--poison-ratios", "0.25",
       "--methods", "sft,lisa+antidote,vaccine+surgery+safelora", "--alphas", "50",
       "--set", "lisa.alignment_steps=1", "--set", "lisa.finetune_steps=1", "--set", "antidote.samples=4",
       "--set", "safelora.num_layers=2",
       "--safety-data", f"harmbench={demo_data / 'eval_harmful.txt'}",
       "--task-data", f"surgery_gsm8k={demo_data / 'arithmetic_test.jsonl'}", "--limit", "2", "--max-new-tokens", "2")
    cells = {c["method"]: c for c in json.loads((out / "sweep.json").read_text())["cells"]}
    assert set(cells) == {"sft", "lisa+antidote", "vaccine+surgery+safelora"}
    # alignment: the shared SFT one, and Vaccine's own; each once
    assert sorted(p.name for p in out.glob("align*")) == ["align", "align-vaccine", "aligned", "aligned-vaccine"]
    for method, (trained, post) in {"sft": ("sft", None), "lisa+antidote": ("lisa", "antidote"),
                                    "vaccine+surgery+safelora": ("surgery", "safelora")}.items():
        folder = out / "cells" / cells[method]["name"] / "finetune"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["method"] == trained and (summary["post"] or {}).get("method") == post
        assert (folder / "adapter-trained").is_dir() == (post is not None)
    resolved = (out / "cells" / cells["vaccine+surgery+safelora"]["name"] / "finetune" / "recipe.resolved.toml").read_text()
    assert f'name = "{out / "aligned-vaccine"}"' in resolved and "unaligned_model =" in resolved
    md = (out / "sweep.md").read_text()
    assert all(f"| {label} |" in md for label in ("SFT", "Lisa + Antidote", "Vaccine + Surgery a=50 + Safe LoRA"))
    result = invoke("sweep", sweep_recipe, "--out", tmp_path / "never", "--methods", "lisa+surgery")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "lisa and surgery are both finetune-stage defenses" in result.output


def test_a_trainer_refuses_a_post_fine_tuning_defense(tokenizer_dir):
    """Antidote inside a trainer would train plain SFT and repair nothing; the mixin says where it goes."""
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from surgerycli import with_defense

    with pytest.raises(TypeError, match=r"Antidote repairs a model after training; call Antidote\(\.\.\.\)\.apply"):
        with_defense(Trainer)(model=tiny_model("llama"), args=TrainingArguments("unused", report_to="none"),
                              processing_class=AutoTokenizer.from_pretrained(tokenizer_dir), defense=Antidote())
