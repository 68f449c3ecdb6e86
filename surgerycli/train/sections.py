"""`surgery finetune`: the recipe's core sections as typed, frozen, strict pydantic models.

The defenses' sections live in their own modules (`train.defenses`); `train.recipe` validates a whole
recipe against all of them. `Expect` and `Exists` are field metadata the validation reads: the words of
an error, and what must exist on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ..data.refsets import DEFAULT_HARMFUL, DEFAULT_HARMLESS


class Section(BaseModel):
    """A recipe section: strict types, unknown keys refused, frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


@dataclass(frozen=True)
class Expect:
    """Field metadata: what the error says was expected, for types the generic text cannot describe."""

    text: str


@dataclass(frozen=True)
class Exists:
    """Field metadata: the value names something that must exist (`file`, `refset` or `model`)."""

    kind: str


def _modules(value: str | list[str]) -> str | list[str]:
    if value == "all-linear" or (isinstance(value, list) and value and all(value)):
        return value
    raise ValueError("target_modules")


def _hub_table(value: object) -> object:
    """A hub dataset table {path, name, split, revision} -> its source text `hub:...` (`data.rows`)."""
    if isinstance(value, dict):
        from ..data.rows import hub_source

        return hub_source(value)
    return value


_SOURCE = "a file (.jsonl, .json, .csv, .parquet), a folder written by save_to_disk, or a hub table {path, name, split}"
DataFile = Annotated[str, BeforeValidator(_hub_table), Exists("file"), Expect(_SOURCE)]
OptionalDataFile = Annotated[str | None, BeforeValidator(_hub_table), Exists("file"), Expect(_SOURCE)]
RefSetSource = Annotated[str, BeforeValidator(_hub_table), Exists("refset"), Expect(_SOURCE + ", or a builtin: set")]
PairsSource = Annotated[str, BeforeValidator(_hub_table), Exists("pairs"), Expect(_SOURCE + ", or a builtin: set")]


SCHEDULERS = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                     "polynomial", "inverse_sqrt"]
BENIGN_FORMATS = Literal["auto", "alpaca", "messages", "prompt_response", "gsm8k", "sst2", "agnews"]


class ModelSection(Section):
    name: Annotated[str, Exists("model")]
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    chat_template: Annotated[str | None, Exists("template")] = None  # a Jinja file replacing the tokenizer's


class QuantizationSection(Section):
    load_in_4bit: bool | None = None  # unset: on when a GPU is there


class LoraSection(Section):
    enabled: bool = True  # false: full fine-tuning of every parameter (the output holds model/, not adapter/)
    r: Annotated[int, Field(ge=1)] = 16
    alpha: Annotated[float, Field(ge=0)] = 32.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: Annotated[str | list[str], AfterValidator(_modules),
                              Expect('"all-linear" or a non-empty list of module names')] = "all-linear"


class DataSection(Section):
    benign: DataFile
    benign_format: BENIGN_FORMATS = "auto"
    harmful: OptionalDataFile = None
    poison_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    num_samples: Annotated[int, Field(ge=1)] = 1000
    system_prompt: str = ""


class MeasureSection(Section):
    """[measure]: the sink statistic's settings, shared by `finetune` (sink_before/after.json, for every method),
    `inspect` and the defenses that regularize it (Surgery's reference batches)."""

    sink_position: Annotated[int, Field(ge=0)] = 0  # the sink key: this many tokens after the first real token
    harmful_reference: RefSetSource = DEFAULT_HARMFUL
    harmless_reference: RefSetSource = DEFAULT_HARMLESS
    reference_rows: Literal["sample", "first"] = "sample"  # the pool of 1000 per set: drawn with the seed, or the
    # first 1000 in file order (the reference code's)
    max_length: Annotated[int | None, Field(ge=8)] = None  # tokens per reference sample; default train.max_length
    samples: Annotated[int, Field(ge=0)] = 64  # per set, for sink_before/after.json; 0 skips them


class DefenseSection(Section):
    method: str = "surgery"  # a registered defense; checked against the registry


class TrainSection(Section):
    epochs: Annotated[float, Field(ge=0)] = 1.0
    learning_rate: Annotated[float, Field(ge=0)] = 1e-4
    lr_scheduler: SCHEDULERS = "constant"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(ge=0)] = 1.0
    batch_size: Annotated[int, Field(ge=1)] = 4
    grad_accum: Annotated[int, Field(ge=1)] = 1
    max_length: Annotated[int, Field(ge=8)] = 512
    seed: Annotated[int, Field(ge=0)] = 42
    gradient_checkpointing: bool = True
    logging_steps: Annotated[int, Field(ge=1)] = 10
    save_steps: Annotated[int, Field(ge=1)] = 100
    save_total_limit: Annotated[int, Field(ge=1)] = 2
    max_steps: Annotated[int | None, Field(ge=1)] = None
    fused_cross_entropy: bool = False  # the SFT loss without (B, T, vocab) logits: Liger on CUDA, else chunked
    report_to: Literal["none", "tensorboard", "wandb", "mlflow", "trackio"] = "none"  # the experiment tracker
    run_name: str | None = None  # the tracker's name for the run (default: the output folder's name)


class MonitorSection(Section):
    every_steps: Annotated[int, Field(ge=0)] = 0  # 0: off
    n: Annotated[int, Field(ge=1)] = 32
    prompts: RefSetSource = "builtin:harmbench"  # or a file; held out from training
    max_new_tokens: Annotated[int, Field(ge=1)] = 32


class OutputSection(Section):
    dir: str | None = None  # unset: out/<recipe file stem>
