"""The Surgery regularizer against the reference computation, and the sequential backward."""

from __future__ import annotations

import json

import pytest
import torch
from parity import reference_sink_loss
from recipes import write_recipe
from tiny import TINY_CONFIGS, tiny_model

from surgerycli.files import save_folder
from surgerycli.train.callbacks import last_checkpoint
from surgerycli.patches import set_sink_mode
from surgerycli.train.defenses.surgery import SinkRegularizer, sink_divergence, sink_loss

HARMFUL = [[5, 9, 14, 3, 7, 22, 8], [11, 4, 6, 30, 2, 9, 19, 40, 3], [7, 7, 8]]
HARMLESS = [[12, 5, 33, 9, 10], [4, 44, 21, 6, 13, 17, 2, 8, 8, 50, 3]]


def regularizer(harmful, harmless, k, alpha=1.0, sink_position=0):
    return SinkRegularizer(alpha=alpha, sink_position=sink_position, harmful=harmful, harmless=harmless,
                           k=k, pad_id=0, seed=0)


def test_divergence_and_loss_by_hand():
    # 2 harmful then 2 harmless rows, 1 layer, 2 heads; the second harmless row has no statistic
    stats = torch.tensor([[[0.6, 0.2]], [[0.4, 0.4]], [[0.3, 0.5]], [[float("nan"), 0.1]]])
    d = sink_divergence(stats, 2)
    assert torch.allclose(d, torch.tensor([[0.5 - 0.3, 0.3 - 0.5]]))
    assert sink_loss(d).item() == pytest.approx((0.2 + 0.0) / 2)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_sink_loss_and_gradients_match_the_eager_reference(arch):
    """One batched patched forward of every sample == separate eager forwards, value and gradient."""
    model = tiny_model(arch, attn_implementation="sdpa" if arch != "gemma2" else None).train()
    torch.manual_seed(0)
    ref_loss, ref_d = reference_sink_loss(model, HARMFUL[:2], HARMLESS)
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    reg = regularizer(HARMFUL[:2], HARMLESS, k=2)  # k = set size: the draw is the whole set
    set_sink_mode(model, True)
    try:
        loss, positive, tokens = reg.backward_step(model, step=0, scale=1.0, backward=torch.Tensor.backward)
    finally:
        set_sink_mode(model, False)
    assert loss == pytest.approx(ref_loss.item(), abs=1e-6)
    assert positive == int((ref_d > 0).sum())
    assert tokens == sum(map(len, HARMFUL[:2] + HARMLESS))
    assert ref_loss.item() > 0  # the comparison is not vacuous
    for name, g in ref_grads.items():  # no gradient at all (None) where the reference's is zero
        got = dict(model.named_parameters())[name].grad
        assert torch.allclose(torch.zeros_like(g) if got is None else got, g, atol=1e-6), name


def test_backward_starts_at_the_highest_layer_with_a_positive_head():
    """Uniform attention in the last layer (zero query and key weights) makes its sink mean depend on the
    length alone, so with equal-length sets its d_h is exactly 0 for every head: its weights get no
    gradient at all (None, not zeros), while the rest match the eager reference."""
    model = tiny_model("llama", attn_implementation="sdpa").train()
    last = model.model.layers[-1].self_attn
    with torch.no_grad():
        last.q_proj.weight.zero_()
        last.k_proj.weight.zero_()
    harmful, harmless = [HARMFUL[0], HARMFUL[0][::-1]], [HARMLESS[1][:7], HARMLESS[1][3:10]]  # all 7 tokens
    ref_loss, ref_d = reference_sink_loss(model, harmful, harmless)
    ref_loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    assert (ref_d[-1] == 0).all() and (ref_d[:-1] > 0).any()
    set_sink_mode(model, True)
    try:
        loss, positive, _ = regularizer(harmful, harmless, k=2).backward_step(model, 0, 1.0, torch.Tensor.backward)
    finally:
        set_sink_mode(model, False)
    assert loss == pytest.approx(ref_loss.item(), abs=1e-6) and positive == int((ref_d > 0).sum())
    last_layer = f"model.layers.{len(model.model.layers) - 1}."
    for name, p in model.named_parameters():
        if name.startswith(last_layer):
            assert p.grad is None, name  # the backward never reached the last layer
        if p.grad is None:  # wherever the backward did not reach, the reference's gradient is exactly 0
            assert name not in ref or not ref[name].any(), name
        else:
            assert torch.allclose(p.grad, ref[name], atol=1e-6), name
    assert model.model.embed_tokens.weight.grad is not None


def test_no_positive_head_runs_no_backward():
    model = tiny_model("llama", attn_implementation="sdpa").train()
    set_sink_mode(model, True)
    try:  # the same samples on both sides: every d_h is exactly 0
        loss, positive, _ = regularizer(HARMFUL[:2], HARMFUL[:2], k=2).backward_step(model, 0, 1.0, torch.Tensor.backward)
    finally:
        set_sink_mode(model, False)
    assert loss == 0.0 and positive == 0
    assert all(p.grad is None for p in model.parameters())


def test_batch_draw_is_k_of_each_and_fixed_per_step():
    reg = regularizer(HARMFUL, HARMLESS, k=1)
    a, b = reg.batch(3), reg.batch(3)
    assert torch.equal(a["input_ids"], b["input_ids"])
    harm_row = a["input_ids"][0][a["attention_mask"][0].bool()].tolist()
    safe_row = a["input_ids"][1][a["attention_mask"][1].bool()].tolist()
    assert harm_row in HARMFUL and safe_row in HARMLESS
    draws = {tuple(reg.batch(s)["input_ids"][0].tolist()) for s in range(20)}
    assert len(draws) > 1  # a fresh sample each step


@pytest.mark.parametrize("checkpointing", [False, True])
def test_sequential_backward_equals_joint_backward(checkpointing):
    """Back-propagating the SFT loss, then the sink term, gives the gradient of their sum."""
    alpha = 7.0
    model = tiny_model("llama", attn_implementation="sdpa").train()
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
        assert model.is_activation_checkpointing
    ids = torch.tensor([[3, 8, 15, 4, 9, 22]])
    # joint: the reference's single backward of sft + alpha * sink, all eager (a checkpoint recompute
    # must take the path its forward took)
    model.set_attn_implementation("eager")
    sink, _ = reference_sink_loss(model, HARMFUL[:2], HARMLESS)
    (model(input_ids=ids, labels=ids).loss + alpha * sink).backward()
    joint = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_attn_implementation("sdpa")
    reg = regularizer(HARMFUL[:2], HARMLESS, k=2, alpha=alpha)
    set_sink_mode(model, True)
    try:
        # sequential, as Surgery.training_step does it: the SFT backward, then the sink term's
        model(input_ids=ids, labels=ids).loss.backward()
        reg.backward_step(model, step=0, scale=1.0, backward=torch.Tensor.backward)
    finally:
        set_sink_mode(model, False)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, joint[n], atol=1e-5), n


def test_last_checkpoint_skips_and_removes_a_half_written_one(tmp_path):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-6" / "adapter_model.safetensors").write_text("half")  # killed mid-save
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_save_folder_keeps_the_old_folder_when_saving_fails(tmp_path):
    target = tmp_path / "adapter"
    save_folder(target, lambda d: (d / "weights").write_text("v1"))
    assert (target / "weights").read_text() == "v1"

    def crash(d):
        (d / "weights").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_folder(target, crash)
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    save_folder(target, lambda d: (d / "weights").write_text("v2"))
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_reference_rows_first_and_reference_length(tmp_path, tiny_llama_dir):
    from surgerycli.train.builders import build_defense, build_references
    from surgerycli.train.defenses import DefenseContext
    from surgerycli.train.recipe import load_recipe

    bt = tmp_path / "bt.jsonl"
    bt.write_text("".join(json.dumps({"prompt": f"p{i} " + "word " * 40, "response": "r", "is_safe": i % 3 == 0})
                          + "\n" for i in range(1600)))
    (tmp_path / "gsm.jsonl").write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n')
    path = write_recipe(tmp_path / "r.toml", tiny_llama_dir, {"benign": tmp_path / "gsm.jsonl", "poison_ratio": 0.0},
                        measure={"harmful_reference": bt, "harmless_reference": bt, "reference_rows": "first",
                                 "max_length": 16})
    recipe = load_recipe(path)
    harm, safe = build_references(recipe.measure, recipe.train.seed)
    unsafe = [i for i in range(1600) if i % 3]
    assert [s[0]["content"].split()[0] for s in harm.samples] == [f"p{i}" for i in unsafe[:1000]]  # file order
    assert [s[0]["content"].split()[0] for s in safe.samples] == [f"p{i}" for i in range(0, 1600, 3)]  # all 534
    sampled, _ = build_references(load_recipe(path, ["measure.reference_rows=sample"]).measure, recipe.train.seed)
    assert len(sampled.samples) == 1000 and sampled.samples != harm.samples
    from transformers import AutoTokenizer

    defense = build_defense(recipe)
    model = tiny_model("llama")
    defense.setup(DefenseContext(model, AutoTokenizer.from_pretrained(tiny_llama_dir), 0, 64, lambda chats: [], (harm, safe)))
    assert max(map(len, defense.regularizer.harmful + defense.regularizer.harmless)) == 16  # measure.max_length
