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
from ..data.rows import hub_source


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
    """[model]: the model fine-tuned."""

    name: Annotated[str, Exists("model")]  # a hub id, a local folder, or `smollm2` (the packaged SmolLM2-135M-Instruct)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bfloat16 on a GPU, float32 on CPU
    chat_template: Annotated[str | None, Exists("template")] = None  # a Jinja file replacing the tokenizer's
    # chat template for training, the reference sets, the sink measurement and the output's evaluation


class QuantizationSection(Section):
    """[quantization]: QLoRA's 4-bit base weights (bitsandbytes NF4, double quantization, bfloat16 compute)."""

    load_in_4bit: bool | None = None  # unset: on when a GPU is there (refused with lora.enabled = false)


class LoraSection(Section):
    """[lora]: the peft LoRA adapter trained (or full fine-tuning with enabled = false)."""

    enabled: bool = True  # false: full fine-tuning of every parameter (the output holds model/, not adapter/)
    r: Annotated[int, Field(ge=1)] = 16  # the adapter's rank
    alpha: Annotated[float, Field(ge=0)] = 32.0  # LoRA's scale numerator: updates are scaled by alpha / r
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05  # dropout on the adapter's input
    target_modules: Annotated[str | list[str], AfterValidator(_modules),
                              Expect('"all-linear" or a non-empty list of module names')] = "all-linear"
    # the linear layers that get an adapter (peft's names)


class DataSection(Section):
    """[data]: the fine-tuning set: the user's task examples with a share of harmful ones mixed in."""

    benign: DataFile  # the task examples
    benign_format: BENIGN_FORMATS = "auto"  # how a row reads as a conversation: alpaca (instruction/input/output),
    # messages, prompt_response, gsm8k (question/answer), sst2, agnews; auto: from its columns
    harmful: OptionalDataFile = None  # prompt/response pairs mixed in (the attack; BeaverTails: its unsafe rows)
    poison_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1  # round(poison_ratio * num_samples) samples are harmful
    num_samples: Annotated[int, Field(ge=1)] = 1000  # examples in all, harmful ones included, shuffled with train.seed
    system_prompt: str = ""  # a system turn before every example (and in the evaluation of the output)


class MeasureSection(Section):
    """[measure]: the sink statistic's settings, shared by `finetune` (sink_before/after.json, for every method),
    `inspect` and the defenses that regularize it (Surgery's reference batches)."""

    sink_position: Annotated[int, Field(ge=0)] = 0  # the sink key: this many tokens after the first real token
    harmful_reference: RefSetSource = DEFAULT_HARMFUL  # harmful prompts the sink statistic is measured on
    harmless_reference: RefSetSource = DEFAULT_HARMLESS  # harmless prompts, its counterpart
    reference_rows: Literal["sample", "first"] = "sample"  # the pool of 1000 per set: drawn with the seed, or the
    # first 1000 in file order (the reference code's)
    max_length: Annotated[int | None, Field(ge=8)] = None  # tokens per reference sample; default train.max_length
    samples: Annotated[int, Field(ge=0)] = 64  # per set, for sink_before/after.json; 0 skips them


class DefenseSection(Section):
    """[defense]: which defense trains, and which repairs the trained model (each has its own section below)."""

    method: str = "surgery"  # a registered defense of the alignment or fine-tuning stage; checked against the registry
    post: str | None = None  # a post-fine-tuning defense (antidote, safelora) applied to the trained model before
    # it is saved (the model as trained goes to adapter-trained/ or model-trained/)


class TrainSection(Section):
    """[train]: the optimization, as transformers' Trainer runs it (AdamW)."""

    epochs: Annotated[float, Field(ge=0)] = 1.0  # passes over the samples
    learning_rate: Annotated[float, Field(ge=0)] = 1e-4  # peak learning rate
    lr_scheduler: SCHEDULERS = "constant"  # transformers' schedule names (`constant` ignores warmup)
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0  # share of the steps spent warming up
    weight_decay: Annotated[float, Field(ge=0)] = 0.0  # AdamW's decoupled weight decay
    max_grad_norm: Annotated[float, Field(ge=0)] = 1.0  # clip the gradient norm to this; 0: no clipping
    batch_size: Annotated[int, Field(ge=1)] = 4  # rows per micro-batch on each process
    grad_accum: Annotated[int, Field(ge=1)] = 1  # micro-batches per optimizer step
    max_length: Annotated[int, Field(ge=8)] = 512  # tokens per training example; longer ones are cut
    seed: Annotated[int, Field(ge=0)] = 42  # data order, harmful draw, dropout and the defenses' own draws
    gradient_checkpointing: bool = True  # recompute activations in the backward (non-reentrant): less memory
    logging_steps: Annotated[int, Field(ge=1)] = 10  # steps between metrics.jsonl rows
    save_steps: Annotated[int, Field(ge=1)] = 100  # steps between checkpoints (a rerun resumes from the last)
    save_total_limit: Annotated[int, Field(ge=1)] = 2  # checkpoints kept
    max_steps: Annotated[int | None, Field(ge=1)] = None  # stop after this many steps; unset: from epochs
    fused_cross_entropy: bool = False  # the SFT loss without (B, T, vocab) logits: Liger on CUDA, else chunked
    report_to: Literal["none", "tensorboard", "wandb", "mlflow", "trackio"] = "none"  # the experiment tracker
    # (tensorboard: event files under OUT/checkpoints/runs/; the `tracking` extra installs them all)
    run_name: str | None = None  # the tracker's name for the run (default: the output folder's name)


class MonitorSection(Section):
    """[monitor]: a harmful score measured during training (keyword judge, greedy), into metrics.jsonl."""

    every_steps: Annotated[int, Field(ge=0)] = 0  # steps between probes; 0: off
    n: Annotated[int, Field(ge=1)] = 32  # prompts per probe
    prompts: RefSetSource = "builtin:harmbench"  # the probe's prompts; those in the training mix or a
    # reference set are dropped
    max_new_tokens: Annotated[int, Field(ge=1)] = 32  # tokens generated per prompt


class OutputSection(Section):
    """[output]: where the run writes (`--out` overrides)."""

    dir: str | None = None  # unset: out/<recipe file stem>
