"""How much of the aligned model survives each attack in a search folder: per configuration, how many of a cell's
answers to the harmful prompts are word for word those of the model the attack started from ("before the attack":
the shared aligned model, or the one Vaccine or Booster aligned itself). A defense that holds by undoing the
fine-tuning altogether answers as that model did; one that holds while the attack took shows other words and
still refuses.

    python studies/unchanged_answers.py studies/smollm2-2026-12-05/worst   # the markdown table docs/study.md shows
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
from pathlib import Path

from surgerycli.study.answers import BEFORE, before_cell
from surgerycli.study.grid import part


def answers(folder: Path) -> dict[str, dict[str, str]]:
    """cell -> prompt -> answer, from the folder's answers.jsonl.gz."""
    found: dict[str, dict[str, str]] = {}
    with gzip.open(folder / "answers.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            found.setdefault(row["cell"], {})[row["prompt"]] = row["response"]
    return found


def unchanged(cell: dict[str, str], before: dict[str, str]) -> int:
    """How many of the cell's answers equal the aligned model's to the same prompt, character for character."""
    return sum(before.get(prompt) == answer for prompt, answer in cell.items())


def table(folder: Path) -> str:
    """One row per configuration: its trials' counts (median, range) and its confirmed worst trial's on each of the
    confirmation's seeds, each against the configuration's own model before the attack."""
    found = answers(folder)
    configurations = json.loads((folder / "search.json").read_text(encoding="utf-8"))["configurations"]
    seeds = list(dict.fromkeys(s for c in configurations for s in (c.get("confirm") or {}).get("seeds", [])))
    lines = [f"| configuration | trials | unchanged answers per trial (median, range) of {len(found[BEFORE])} | "
             f"worst trial on seeds {', '.join(map(str, seeds)) or '-'} |", "|---|---|---|---|"]
    for c in configurations:
        before = found[before_cell(part(c["method"], "align"))]
        trials = [unchanged(found[t["name"]], before) for t in c["trials"] if t["name"] in found]
        confirmed = [unchanged(found[name], before) for name in (c.get("confirm") or {}).get("cells", [])]
        spread = f"{statistics.median(trials):g} ({min(trials)}-{max(trials)})" if trials else "-"
        lines.append(f"| {c['label']} | {len(trials)} | {spread} | {', '.join(map(str, confirmed)) or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "smollm2-2026-12-05" / "worst"))
