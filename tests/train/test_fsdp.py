"""FSDP2 on CPU (torchrun, gloo): `[trainer] fsdp = "full_shard"` shards the model for real, and two sharded
processes train the weights one process trains with the whole batch (the DDP test's premise: equal-length
rows, one-row reference sets, plain SGD without clipping). A defense that draws a batch of its own per rank
(Lisa's alignment data, Booster's harmful batch) is compared with two DDP processes instead: sharding must
not change what each rank computes."""

from __future__ import annotations

import json
import re

import pytest
import torch
from test_distributed import ddp_recipe, torchrun, weights  # noqa: F401  (ddp_recipe is a fixture)
from transformers import AutoModelForCausalLM

from clirun import invoke, ok
from surgerycli.train.monitor import PROBE_METRIC

PROBE = PROBE_METRIC.key
FSDP = ('trainer.fsdp="full_shard"',)
CASES = {
    "sft-full-chunked": ("defense.method=sft", "lora.enabled=false", "train.fused_cross_entropy=true"),
    "surgery": ("defense.method=surgery",),
    # with the harmful-score probe: its generation runs through the sharded model on every rank
    "surgery-full": ("defense.method=surgery", "lora.enabled=false", "monitor.every_steps=2", "monitor.n=2",
                     "monitor.max_new_tokens=3"),
    # FSDP's own activation checkpointing: the sink term's backward recomputes each layer's forward
    "surgery-full-ac": ("defense.method=surgery", "lora.enabled=false", "trainer.fsdp_config={activation_checkpointing=true}"),
}
AGAINST_DDP = {
    "lisa-full": ("defense.method=lisa", "lora.enabled=false", "lisa.alignment_steps=1", "lisa.finetune_steps=1",
                  "lisa.rho=1.0", "lisa.warmup=0.0"),
    "vaccine-full": ("defense.method=vaccine", "lora.enabled=false"),
    # one step: Booster's normalized perturbation at lr 0.05 turns 3e-8 of summation order (DDP sums SFT and
    # Booster terms before averaging, FSDP averages each backward) into 1e-2 by the fourth step
    "booster-full": ("defense.method=booster", "lora.enabled=false", "train.max_steps=1"),
}


def one_process(tmp_path, recipe, sets, name="one"):
    out = tmp_path / name
    args = ["finetune", recipe, "--output", out, "--set", "train.batch_size=4"]
    for s in sets:
        args += ["--set", s]
    ok(*args)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_two_sharded_processes_match_one_with_the_whole_batch(tmp_path, ddp_recipe, case):
    sets = CASES[case]
    one = one_process(tmp_path, ddp_recipe, sets)
    two = tmp_path / "two"
    torchrun(ddp_recipe, two, *sets, *FSDP)
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, worst
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["strategy"], summary["world_size"], summary["steps"]) == ("fsdp2", 2, 4)
    held = [json.loads((o / "summary.json").read_text())["held_bytes_per_rank"] for o in (one, two)]
    assert 0.5 <= held[1] / held[0] <= 0.52, held  # half the weights (and optimizer states) on each rank
    probes = [[r.get(PROBE) for r in map(json.loads, (o / "metrics.jsonl").read_text().splitlines())] for o in (one, two)]
    assert probes[0] == probes[1], probes
    if (two / "model").is_dir():  # gathered from the shards: a model folder that loads, equal to the files
        model = AutoModelForCausalLM.from_pretrained(two / "model")
        for name, p in model.named_parameters():
            assert type(p.data) is torch.Tensor and (name not in b or torch.equal(p.data, b[name])), name
    if (one / "sink_after.json").is_file():  # measured after training, through the sharded model
        after = [json.loads((o / "sink_after.json").read_text())["positive_heads"] for o in (one, two)]
        assert after[0] == after[1]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(AGAINST_DDP))
def test_sharded_processes_match_ddp_processes(tmp_path, ddp_recipe, case):
    sets = AGAINST_DDP[case]
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    torchrun(ddp_recipe, ddp, *sets)
    torchrun(ddp_recipe, fsdp, *sets, *FSDP)
    a, b = weights(ddp), weights(fsdp)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert a.keys() == b.keys() and worst < 1e-5, worst
    logs = [[json.loads(line) for line in (o / "metrics.jsonl").read_text().splitlines()] for o in (ddp, fsdp)]
    keys = {"lisa-full": "proximal", "vaccine-full": "hidden_grad_norm"}.get(case, "harmful_drop")
    for x, y in zip(*logs):  # the defense's own metric, over the whole model, not one rank's shard
        if keys in x:
            assert abs(x[keys] - y[keys]) <= 1e-5 * max(1.0, abs(x[keys])), (x, y)


@pytest.mark.slow
def test_a_sharded_run_resumes_with_each_ranks_defense_state(tmp_path, ddp_recipe):
    # Lisa's anchors: each rank holds its shards of them. AdamW: its sharded moments are restored too (plain
    # SGD keeps no state, and torch's full-state-dict optimizer load asserts on an empty one)
    sets = (*AGAINST_DDP["lisa-full"], *FSDP, 'trainer.optim="adamw_torch"', "train.learning_rate=1e-3")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    torchrun(ddp_recipe, whole, *sets)
    torchrun(ddp_recipe, cut, *sets, "train.max_steps=2")  # stops after its checkpoint at step 2
    saved = sorted(p.name for p in (cut / "checkpoints" / "checkpoint-2").glob("defense_state*"))
    assert saved == ["defense_state-rank0.pt", "defense_state-rank1.pt"]
    torchrun(ddp_recipe, cut, *sets)  # constant lr, plain SGD: steps 3 and 4 as in the whole run
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
    a, b = weights(whole), weights(cut)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


@pytest.mark.parametrize("extra, said", [
    ((), "torchrun"),  # one process: nothing to shard across
])
def test_what_fsdp_cannot_run_is_refused_in_one_line(tmp_path, ddp_recipe, extra, said):
    args = ["finetune", ddp_recipe, "--output", tmp_path / "x", "--set", FSDP[0]]
    for s in extra:
        args += ["--set", s]
    result = invoke(*args)
    assert result.exit_code == 2 and "trainer.fsdp" in result.output and said in result.output, result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("sets, said", [
    (("train.gradient_checkpointing=true", "trainer.fsdp_config={activation_checkpointing=true}"), "set it to false"),
    (("quantization.load_in_4bit=true",), "bitsandbytes#1945"),
    # every rank stops at the same step, none left waiting in a collective (the timeout would say so)
    (("lora.enabled=false", "train.learning_rate=1e12", "train.max_steps=30", "train.save_steps=1"), "not finite"),
], ids=["two-checkpointings", "qlora", "non-finite"])
def test_what_fsdp_cannot_run_under_torchrun_is_refused_in_one_line(tmp_path, ddp_recipe, sets, said):
    proc = torchrun(ddp_recipe, tmp_path / "x", *FSDP, *sets, wait=False)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode != 0 and said in out and "rank0]: ValueError" not in out, out[-3000:]
    if said == "not finite":  # both ranks, the same step, the checkpoint before it kept
        steps = re.findall(r"error: step (\d+): the loss is \S+ and the gradient norm", out)
        assert len(steps) == 2 and steps[0] == steps[1] and int(steps[0]) > 1, out[-3000:]
        assert (tmp_path / "x" / "checkpoints" / f"checkpoint-{int(steps[0]) - 1}" / "trainer_state.json").is_file()
    else:  # refused before training
        assert not (tmp_path / "x" / "checkpoints").exists()
