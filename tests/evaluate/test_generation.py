"""Continuous batching over a growing cache and over static slots, and `--batch-size auto`
(surgerycli.evaluate.continuous, static, generation) against transformers' own `generate` of one prompt at a
time, and the slot count against a hand calculation."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from surgerycli.evaluate import generation
from surgerycli.evaluate.continuous import continuous_ids
from surgerycli.upstream.hf_cache import plain_cache
from surgerycli.evaluate.static import static_ids, step
from surgerycli.evaluate.options import resolve_options
from surgerycli.errors import InputError


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 96, (int(torch.randint(2, 14, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def alone(model, prompt: list[int], eos: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy generate of one prompt, no padding: its new tokens up to and with the first eos."""
    seq = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=0)
    return seq[0, len(prompt):].tolist()


PATHS = pytest.mark.parametrize("path", [continuous_ids, static_ids], ids=["continuous", "static"])


@PATHS
def test_rows_that_end_leave_and_waiting_prompts_join_yet_every_answer_is_the_one_it_gets_alone(path):
    model = tiny_model("llama", attn_implementation="sdpa", seed=3)
    encoded, T = prompts(11), 12
    # an end token the random model emits at different steps for different prompts, so rows leave at
    # different times and the waiting prompts join a batch mid-way
    free_run = [alone(model, p, [2], T) for p in encoded]
    counts = torch.bincount(torch.tensor([t for r in free_run for t in r[1:8]]), minlength=96)
    eos = [2, int(counts.argmax())]
    expected = [alone(model, p, eos, T) for p in encoded]
    lengths = {len(e) for e in expected}
    assert len(lengths) >= 3 and T in lengths  # some end early, at different steps; some run to the limit
    got = path(model, encoded, slots=3, max_new_tokens=T, eos=eos, pad_id=0)
    assert [g[:len(e)] for g, e in zip(got, expected)] == expected
    assert [len(g) for g in got] == [len(e) for e in expected]  # nothing generated past an end token


@PATHS
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_every_prompt_at_once_and_one_at_a_time_agree(path, attn):
    model = tiny_model("qwen2", attn_implementation=attn, use_sliding_window=False, seed=1)
    encoded = prompts(5, seed=4)
    expected = [alone(model, p, [2], 9) for p in encoded]
    for slots in (1, 5):
        assert path(model, encoded, slots=slots, max_new_tokens=9, eos=[2], pad_id=0) == expected


def test_the_static_decode_step_is_one_graph_through_joins_and_leaves():
    """What CUDA graphs need: dynamo captures the whole step (fullgraph: a graph break raises) once, and rows
    joining and leaving the slots, or a new cache, never change what it captured (one graph, no recompilation)."""
    from torch._dynamo.utils import counters

    model = tiny_model("llama", attn_implementation="sdpa", seed=3)
    encoded = prompts(7, seed=5)
    expected = [alone(model, p, [2, 17], 10) for p in encoded]
    assert len({len(e) for e in expected}) >= 2  # rows leave at different steps
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(step, backend="eager", fullgraph=True)
    for _ in range(2):  # the second call allocates a new cache of the same shape: no recompilation either
        got = static_ids(model, encoded, slots=3, max_new_tokens=10, eos=[2, 17], pad_id=0, run_step=compiled)
        assert got == expected
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_a_sliding_window_cache_keeps_the_fixed_batches(monkeypatch):
    assert plain_cache(tiny_model("llama"))
    model = tiny_model("mistral", attn_implementation="sdpa")
    assert not plain_cache(model)  # its sliding layers are not rearranged: generate_ids runs fixed batches

    class Tok:
        pad_token_id, eos_token_id = 0, 2

        @staticmethod
        def decode(ids, skip_special_tokens=True):
            return " ".join(str(i) for i in ids if i not in (0, 2))

    called = []
    monkeypatch.setattr(generation, "fixed_batches", lambda *a: called.append(a[3]) or ["x"] * len(a[2]))
    assert generation.generate_ids(model, Tok(), prompts(4), batch_size=2, max_new_tokens=3) == ["x"] * 4
    assert called == [2]
    for decode in ("continuous", "static"):  # asked for by name: refused with one line, not silently replaced
        with pytest.raises(InputError, match=f"decode {decode}: MistralForCausalLM's cache is not one plain"):
            generation.generate_ids(model, Tok(), prompts(4), batch_size=2, max_new_tokens=3, decode=decode)
    generation.generate_ids(tiny_model("llama"), Tok(), prompts(3), batch_size=2, max_new_tokens=3, decode="fixed")
    assert called == [2, 2]  # fixed batches on request, where continuous batching was possible


def test_auto_rows_are_half_the_free_memory_over_one_rows_cache_activations_and_logits(monkeypatch):
    model = tiny_model("llama", vocab_size=100, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16)
    # by hand, fp32: keys + values = 2 * 2 layers * 2 kv heads * 16 * 4 bytes = 512 bytes a token, for
    # 10 prompt + 20 new + 128 spare tokens = 80,896; prefill activations 10 * (4 * 64 + 2 * 128) * 4 = 20,480;
    # one row of fp32 logits 100 * 4 = 400: 101,776 bytes a row
    monkeypatch.setattr(generation, "free_bytes", lambda device: 10_000_000)
    assert generation.auto_slots(model, 10, 20) == 5_000_000 // 101_776 == 49
    assert generation.batch_rows("auto", model, [[5] * 10, [5] * 3], 20) == 49  # sized for the longest prompt
    assert generation.batch_rows(7, model, [[5] * 10], 20) == 7
    monkeypatch.setattr(generation, "free_bytes", lambda device: 10**15)
    assert generation.auto_slots(model, 10, 20) == generation.MAX_SLOTS
    monkeypatch.setattr(generation, "free_bytes", lambda device: 1000)
    assert generation.auto_slots(model, 10, 20) == 1


def test_a_bad_decode_is_refused_naming_the_choices():
    with pytest.raises(InputError, match="--decode paged: expected one of auto, continuous, static, fixed"):
        resolve_options(decode="paged")
    assert resolve_options(decode="static").decode == "static" and resolve_options().decode == "auto"


@pytest.mark.parametrize("text", ["0", "-3", "many", "2.5"])
def test_a_bad_batch_size_is_refused_naming_the_option(text):
    with pytest.raises(InputError, match=f"--batch-size {text}: expected auto or a whole number"):
        resolve_options(batch_size=text)
    assert resolve_options(batch_size="AUTO").batch_size == "auto"
    assert resolve_options(batch_size="8").batch_size == 8
