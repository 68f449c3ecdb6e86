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
    return max(0.0, center - half), min(1.0, center + half)


def wilson_percent(k: int, n: int) -> list[float]:
    """[low, high] in percent, rounded to 2 decimals (how results.json stores it)."""
    lo, hi = wilson(k, n)
    return [round(100 * lo, 2), round(100 * hi, 2)]
