"""SafeInstr's three seeds on the templated LoRA study (docs/study.md): seeds 0 and 1 from the 2026-11-26 report,
seed 2 from the 2026-12-03 one (each report's sweep.json).

    python studies/safeinstr_seeds.py    # prints the markdown table docs/study.md shows
"""

import json
import statistics
from pathlib import Path

from surgerycli.evaluate.stats import wilson_percent

HERE = Path(__file__).parent
REPORTS = ((HERE / "smollm2-2026-11-26" / "sweep.json", (0, 1)), (HERE / "smollm2-2026-12-03" / "safeinstr-s2" / "sweep.json", (2,)))


def seeds() -> dict[tuple[str, str], dict[int, tuple[float, float]]]:
    """(poison ratio, lr) -> seed -> (HS, FA), 100 prompts each."""
    found: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for path, wanted in REPORTS:
        for c in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if c["method"] == "safeinstr" and c["seed"] in wanted:
                found.setdefault((f"{c['poison_ratio']:g}", c["grid"]["train.learning_rate"]), {})[c["seed"]] = (
                    c["harmful_score"], c["accuracy"])
    return found


def summary(values: list[float]) -> str:
    """Mean ± sd over the seeds, then the 95% Wilson interval pooled over their 300 prompts."""
    low, high = wilson_percent(round(sum(values)), 100 * len(values))
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} [{low:.1f}, {high:.1f}]"


if __name__ == "__main__":
    print("| poison, lr | HS seed 0 / 1 / 2 | HS | FA |\n|---|---|---|---|")
    for (ratio, lr), by_seed in sorted(seeds().items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
        if sorted(by_seed) == [0, 1, 2]:
            hs, fa = ([by_seed[s][i] for s in (0, 1, 2)] for i in (0, 1))
            print(f"| {ratio}, {lr} | {' / '.join(f'{v:g}' for v in hs)} | {summary(hs)} | {summary(fa)} |")
