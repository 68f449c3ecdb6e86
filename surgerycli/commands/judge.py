"""`surgery judge FOLDER... --judge KIND[:PATH]`: the command; the work is `evaluate.rejudge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import BatchSize, Device, Dtype, fail


def judge(
    folders: Annotated[list[Path], typer.Argument(metavar="FOLDER", help="Eval folders (surgery eval --out), or sweep and search folders (their cells' eval folders).")],
    judge_spec: Annotated[str, typer.Option("--judge", help="The second judge: keyword, llama-guard:PATH, beaver-dam:PATH, harmbench-cls:PATH or sorrybench-judge:PATH.")],
    batch_size: BatchSize = "auto",
    device: Device = "auto",
    dtype: Dtype = "auto",
) -> None:
    """Score the answers a folder stored with another judge, without generating again; its results go beside the first judge's (judges/<name>.json and .jsonl in each eval folder), never over them.

    `surgery report` then shows each judge's harmful score with its interval, their agreement (the count of each pair of verdicts, Cohen's kappa) and, for a judge that gives scores, the share of answers at its maximum.

    Manual: docs/eval.md.
    """
    from rich.console import Console

    from ..errors import InputError
    from ..evaluate.judges import make_judge
    from ..evaluate.rejudge import eval_folders, rejudge
    from ..files import writing
    from ..models import pick_device, pick_dtype

    console = Console()
    try:
        found = eval_folders(folders)
        dev = pick_device(device, "--device")
        scorer = make_judge(judge_spec, dev, pick_dtype(dtype, dev, "--dtype"))
        for folder in found:
            with writing(folder, lambda: "the stored answers and the first judge's results are untouched"):
                summary = rejudge(folder, scorer, batch_size)
            scores = ", ".join(f"{r['benchmark']} {r['harmful_score']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]"
                               for r in summary["runs"])
            console.print(f"{folder}: {scorer.name}: {scores}", soft_wrap=True, markup=False, highlight=False)
    except InputError as e:
        raise fail(e) from None
