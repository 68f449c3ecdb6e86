"""`surgery finetune RECIPE.toml`: the recipe as typed sections, validated all at once; `--set`; TOML out.

Each section is a frozen pydantic model (strict: no silent coercion). The sections are the core ones
below plus `[defense]` (which method runs) and one section per registered defense (`train.defenses`),
each with its options and defaults. Validation collects every problem of every section, each with its
key path and what was expected (`surgery.alpha: expected a number >= 0, got "high"`; worded by
`train.problems`), into one InputError. What comes out is a `Recipe`: typed sections, every default and `auto` filled in.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..files import read_toml
from ..models import EMBEDDED_MODEL
from .defenses import registry
from .passthrough import trainer_problems
from .problems import absolute, absolute_paths, show, validate_section
from .sections import (
    DataSection, DefenseSection, LoraSection, MeasureSection, ModelSection, MonitorSection,
    OutputSection, QuantizationSection, Section, TrainSection,
)

CORE = {"model": ModelSection, "quantization": QuantizationSection, "lora": LoraSection, "data": DataSection,
        "measure": MeasureSection, "defense": DefenseSection}
TAIL = {"train": TrainSection, "monitor": MonitorSection, "output": OutputSection}


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: typed sections, with every registered defense's section in `methods`."""

    model: ModelSection
    quantization: QuantizationSection
    lora: LoraSection
    data: DataSection
    measure: MeasureSection
    defense: DefenseSection
    train: TrainSection
    monitor: MonitorSection
    output: OutputSection
    methods: dict[str, Section] = field(default_factory=dict)  # defense name -> its options
    trainer: dict = field(default_factory=dict)  # [trainer]: passed to TrainingArguments as is (checked)

    @property
    def options(self) -> Section:
        """The chosen defense's section."""
        return self.methods[self.defense.method]

    def sections(self) -> dict[str, Section]:
        """Every section by name, in the order the resolved recipe lists them."""
        return {**{k: getattr(self, k) for k in CORE}, **self.methods, **{k: getattr(self, k) for k in TAIL}}


def schema() -> dict[str, type[Section]]:
    """Section name -> section class, the registered defenses' included."""
    return {**CORE, **{name: d.options_class for name, d in registry().items()}, **TAIL}


# ---- loading -------------------------------------------------------------------------------------

def parse_override(text: str) -> tuple[str, str, object]:
    """`section.key=value` -> (section, key, value); the value is read as TOML, else taken as a string."""
    path, sep, raw = text.partition("=")
    section, dot, key = path.strip().partition(".")
    if not sep or not dot or not key:
        raise InputError(f"--set {text}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: model.name=HuggingFaceTB/SmolLM2
    return section, key, value


def _read(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: no such recipe file")
    return read_toml(path, "a recipe")


def _merge(raw: dict, overrides: list[str], problems: list[str]) -> dict:
    merged = {s: dict(v) if isinstance(v, dict) else v for s, v in raw.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        if not isinstance(merged.setdefault(section, {}), dict):
            problems.append(f"--set {text}: {section} is not a section")
            continue
        merged[section][key] = value
    return merged


def _validate(merged: dict, problems: list[str], check_files: bool) -> dict[str, Section]:
    classes = schema()
    if "trainer" in merged:
        problems += trainer_problems(merged["trainer"])
    for name, values in merged.items():
        if name == "trainer":
            continue
        if name not in classes:
            problems.append(f"{name}: unknown section (expected one of {', '.join([*classes, 'trainer'])})")
        elif not isinstance(values, dict):
            problems.append(f"{name}: expected a [{name}] table, got {show(values)}")
    sections = {}
    for name, cls in classes.items():
        given = merged.get(name) if isinstance(merged.get(name), dict) else {}
        built, found = validate_section(name, cls, given, check_files)
        problems += found
        if built is not None:
            sections[name] = built
    if "defense" in sections:  # the keys' checks against the registry: with the rest
        problems += defense_problems(sections["defense"])
    return sections


def defense_problems(section) -> list[str]:
    """`defense.method` must name a training defense (alignment or fine-tuning stage), `defense.post` a
    post-fine-tuning one."""
    found, reg = [], registry()
    trains = [n for n, d in reg.items() if d.stage != "post"]
    repairs = [n for n, d in reg.items() if d.stage == "post"]
    if section.method not in trains:
        found.append(f"defense.method: {'a post-fine-tuning defense goes in defense.post' if section.method in repairs else 'unknown method'} "
                     f"{show(section.method)} (expected one of {', '.join(trains)})")
    if section.post is not None and section.post not in repairs:
        found.append(f"defense.post: expected a post-fine-tuning defense ({', '.join(repairs)}), got {show(section.post)}")
    return found


def _is_gguf(name: str) -> bool:
    return name == EMBEDDED_MODEL or name.endswith(".gguf")


def _cross_checks(sections: dict[str, Section], problems: list[str]) -> None:
    if sections["quantization"].load_in_4bit and not sections["lora"].enabled:
        problems.append("quantization.load_in_4bit: full fine-tuning (lora.enabled = false) trains the weights "
                        "themselves, which 4-bit weights cannot be; set it to false, or enable LoRA (QLoRA)")
    if sections["quantization"].load_in_4bit and _is_gguf(sections["model"].name):
        problems.append("quantization.load_in_4bit: a .gguf model is dequantized on load and cannot be "
                        "loaded in 4-bit; set it to false or use a Hugging Face folder or hub id")
    data = sections["data"]
    if data.poison_ratio > 0 and data.harmful is None:
        problems.append("data.harmful: required when data.poison_ratio > 0")
    import importlib.util

    tracker = sections["train"].report_to
    if tracker != "none" and importlib.util.find_spec(tracker) is None:
        problems.append(f"train.report_to: {show(tracker)} needs the {tracker} package (pip install {tracker})")


def _fill_auto(sections: dict[str, Section], recipe_path: Path) -> None:
    """Replace `auto`/unset values by what this machine will use, so the resolved recipe is explicit."""
    import torch

    gpu = torch.cuda.is_available()
    s = sections
    if s["quantization"].load_in_4bit is None:
        four_bit = gpu and not _is_gguf(s["model"].name) and s["lora"].enabled
        s["quantization"] = s["quantization"].model_copy(update={"load_in_4bit": four_bit})
    dtype = s["model"].dtype if s["model"].dtype != "auto" else ("bfloat16" if gpu else "float32")
    s["model"] = s["model"].model_copy(update={"dtype": dtype, "name": absolute(s["model"].name)})
    if s["output"].dir is None:
        s["output"] = s["output"].model_copy(update={"dir": str(Path("out") / recipe_path.stem)})
    for name, section in s.items():  # local paths made absolute, so the resolved recipe works from anywhere
        paths = absolute_paths(section)
        if paths:
            s[name] = section.model_copy(update=paths)


def load_recipe(
    path: str | Path, overrides: list[str] = (), output: str | None = None, check_files: bool = True
) -> Recipe:
    """The validated recipe with defaults filled; an InputError listing every problem otherwise.

    `check_files=False` skips the existence checks of data and model paths (to check a recipe's shape
    on a machine without its data).
    """
    path = Path(path)
    problems: list[str] = []
    merged = _merge(_read(path), list(overrides), problems)
    if output is not None:
        merged.setdefault("output", {})["dir"] = output
    sections = _validate(merged, problems, check_files)
    if not problems:
        _cross_checks(sections, problems)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise InputError(f"{path}: {len(problems)} {noun}: " + "; ".join(problems))
    _fill_auto(sections, path)
    core = {k: sections.pop(k) for k in (*CORE, *TAIL)}
    return Recipe(**core, methods=sections, trainer=dict(merged.get("trainer") or {}))


def toml_value(value: object) -> str:
    """A value as TOML writes it (the resolved recipe, the reference's defaults)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 0.0001 -> 0.0001, 300.0 -> 300.0: always read back as float
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value) if isinstance(value, str) else str(value)  # JSON escapes are TOML escapes


def dump_recipe(recipe: Recipe) -> str:
    """TOML text of a resolved recipe; load_recipe reads it back to an equal Recipe (unset keys left out)."""
    lines = []
    for name, section in recipe.sections().items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in section.model_dump().items() if v is not None]
        lines.append("")
    if recipe.trainer:
        lines += ["[trainer]", *(f"{k} = {toml_value(v)}" for k, v in recipe.trainer.items()), ""]
    return "\n".join(lines)
