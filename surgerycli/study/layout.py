"""`surgery sweep`, `surgery search` and `surgery report`: where a study folder keeps what it measured before the
attack.

Every attack starts from a model evaluated once: the shared aligned (or base) model, whose scores are base.json and
answers base-eval/, and each model an alignment-stage defense aligned itself (`vaccine`), base-vaccine.json and
base-eval-vaccine/. The names are written by the sweep and the search and read back by the report.
"""

from __future__ import annotations

from pathlib import Path

BEFORE_FILE, BEFORE_FOLDER = "base", "base-eval"


def before_file(out: Path, align: str | None = None) -> Path:
    """The scores before the attack of the shared model (`align` None) or of the one `align` aligned."""
    return out / (f"{BEFORE_FILE}-{align}.json" if align else f"{BEFORE_FILE}.json")


def before_folder(out: Path, align: str | None = None) -> Path:
    """The eval folder (answers, samples.jsonl) of that model before the attack."""
    return out / (f"{BEFORE_FOLDER}-{align}" if align else BEFORE_FOLDER)


def before_files(out: Path) -> dict[str, Path]:
    """Every aligned model's own before-the-attack record in `out`, by the method that aligned it."""
    return {p.stem.removeprefix(f"{BEFORE_FILE}-"): p for p in sorted(out.glob(f"{BEFORE_FILE}-*.json"))}


def before_folders(out: Path) -> dict[str | None, Path]:
    """Every before-the-attack eval folder in `out` that holds answers: None for the shared model's, else the
    method that aligned the model."""
    folders = sorted(p.parent for p in out.glob(f"{BEFORE_FOLDER}*/samples.jsonl"))
    return {f.name.removeprefix(BEFORE_FOLDER).removeprefix("-") or None: f for f in folders}
