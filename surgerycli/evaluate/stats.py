"""`surgery eval` and `surgery sweep`: the 95% Wilson score interval of a proportion (harmful score, accuracy).

Wilson's interval, not the normal approximation: it stays inside [0, 1] and is informative at 0/N and N/N,
where harmful scores of aligned and of broken models sit.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for k successes in n trials, as proportions."""
    if n <= 0:
        raise ValueError("a proportion needs n > 0")
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0/n and n/n the bound is the end of [0, 1] exactly (the difference of the two terms rounds, not to 0)
    return 0.0 if k == 0 else max(0.0, center - half), 1.0 if k == n else min(1.0, center + half)


def wilson_percent(k: int, n: int) -> list[float]:
    """[low, high] in percent, unrounded: results.json and sweep.json keep them so, and a table rounds once,
    where it prints (rounding twice moves a bound: 173/200's upper bound 90.553 is 90.6, not 90.55 -> 90.5)."""
    lo, hi = wilson(k, n)
    return [100 * lo, 100 * hi]


def percent_interval(score: float, n: int | None, stored: list[float] | None) -> list[float] | None:
    """The 95% interval of a percentage of `n` items, from its count (round(score * n / 100)) when `n` is
    known, else the `stored` one (a record from before counts were kept)."""
    return wilson_percent(round(score * n / 100), n) if n else stored
