"""`surgery eval`: results.json's `provenance`: which code, settings, data and judge produced the numbers.

Two runs of the same command on the same data give the same provenance apart from `started_at` and
`wall_time_s`.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .judges import MATCH_RULE, REFUSAL_PHRASES

PACKAGES = {"torch": "torch", "transformers": "transformers", "peft": "peft", "lm_eval": "lm_eval",
            "surgerycli": "surgery"}  # key -> distribution name


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, or None (an installed wheel, no git)."""
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def judge_record(judge) -> dict:
    """The judge's name, its folder, and a hash of what defines it (its config.json, or the keyword list)."""
    folder = getattr(judge, "folder", None)
    if folder is not None:
        digest = hashlib.sha256((Path(folder) / "config.json").read_bytes()).hexdigest()
    else:
        digest = hashlib.sha256("\n".join((*REFUSAL_PHRASES, MATCH_RULE)).encode()).hexdigest()
    return {"name": judge.name, "path": str(folder) if folder is not None else None, "config_sha256": digest}


def task_source(path: str, docs: int, used: int, limit: int | None) -> dict:
    file = Path(path).expanduser()
    return {"path": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest(), "rows_total": docs,
            "rows_used": used, "selection": "every row, in file order" + (f"; the first {limit}" if limit else "")}


def data_sources(benchmarks: dict[str, dict], task_spec: tuple, task_files: dict[str, str], limit: int | None,
                 record: dict) -> dict:
    """provenance.data: each benchmark's source, each built-in task's file, and each lm-eval task as lm-eval
    defines it (its document count from the run's `record`)."""
    sources = dict(benchmarks)
    builtin, other, _ = task_spec
    for name, docs in builtin.items():
        sources[name] = task_source(task_files[name], len(docs), min(len(docs), limit or len(docs)), limit)
    for name in other:
        sources[name] = {"path": f"lm-eval:{name}", "sha256": None, "rows_total": None,
                         "rows_used": record["tasks"].get(name, {}).get("n"), "selection": "as lm-eval defines it"}
    return sources


def provenance(options, *, data: dict, judge, device, dtype, started_at: str, wall_time_s: float) -> dict:
    return {
        "versions": versions(),
        "command": list(sys.argv),
        "git_commit": git_commit(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "started_at": started_at,
        "wall_time_s": round(wall_time_s, 2),
        "generation": {"prompt_format": options.prompt_format, "max_new_tokens": options.max_new_tokens,
                       "max_input_tokens": options.max_input_tokens, "batch_size": options.batch_size,
                       "decode": options.decode,
                       "greedy": True, "preset": options.preset},
        "data": data,
        "judge": judge_record(judge),
    }
