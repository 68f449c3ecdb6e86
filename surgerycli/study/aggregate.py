"""`surgery sweep` and `surgery report`: cells grouped over seeds, pooled intervals, and the correlation
between positive-divergence heads and harm across cells.

Math only (no files): `aggregate` groups finished cells that differ only in their seed and gives, for HS and
FA, the mean and sample standard deviation over seeds and the pooled proportion over every prompt of every
seed with its 95% Wilson interval; `correlation` is the paper's observation as a number: Spearman's rho
between a cell's positive heads after fine-tuning and its harmful score.
"""

from __future__ import annotations

import statistics

from ..evaluate.stats import wilson_percent

SCORES = {"hs": ("harmful_score", "hs_n", "hs_ci95"), "fa": ("accuracy", "fa_n", "fa_ci95")}  # keys in a cell
HEADS = ("positive_heads_before", "positive_heads_after", "significant_positive_heads_after")


def group_key(cell: dict) -> tuple:
    """What a cell is apart from its seed: method, alpha, the method's own axes, grid values, poison ratio."""
    return (cell["method"], cell.get("alpha"), tuple((cell.get("options") or {}).items()),
            tuple((cell.get("grid") or {}).items()), cell["poison_ratio"])


def score_stats(cells: list[dict], key: str, n_key: str, ci_key: str) -> dict | None:
    """Mean and standard deviation over cells (seeds) of a percentage, and the pooled percentage over all
    their items with its 95% Wilson interval (each cell's count recovered as round(score * n / 100)).
    A single cell without its count (a sweep from before counts were kept) keeps its own interval."""
    have = [c for c in cells if c.get(key) is not None]
    if not have:
        return None
    values = [c[key] for c in have]
    out = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
           "values": values, "pooled": None, "ci95": have[0].get(ci_key) if len(have) == 1 else None,
           "k": None, "n": None}
    if all(c.get(n_key) for c in have):
        k = sum(round(c[key] * c[n_key] / 100) for c in have)
        n = sum(c[n_key] for c in have)
        out |= {"pooled": 100 * k / n, "ci95": wilson_percent(k, n), "k": k, "n": n}
    return out


def aggregate(cells: list[dict]) -> list[dict]:
    """One record per group of finished cells that differ only in seed, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if c["status"] == "ok":
            groups.setdefault(group_key(c), []).append(c)
    out = []
    for (method, alpha, options, grid, ratio), members in groups.items():
        rec = {"method": method, "alpha": alpha, "options": dict(options), "grid": dict(grid), "poison_ratio": ratio,
               "seeds": [c.get("seed") for c in members], "cells": [c["name"] for c in members]}
        rec |= {name: score_stats(members, *keys) for name, keys in SCORES.items()}
        for h in HEADS:
            xs = [c[h] for c in members if c.get(h) is not None]
            rec[h] = statistics.fmean(xs) if xs else None
        out.append(rec)
    return out


def correlation(cells: list[dict]) -> dict:
    """Spearman's rho (with its two-sided p-value and N) across finished cells between positive heads after
    fine-tuning (the sign count, and the count whose 95% interval lies above 0) and harmful score."""
    from scipy.stats import spearmanr

    out = {}
    for name, key in (("sign", "positive_heads_after"), ("significant", "significant_positive_heads_after")):
        pairs = [(c[key], c["harmful_score"]) for c in cells
                 if c["status"] == "ok" and c.get(key) is not None and c.get("harmful_score") is not None]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(pairs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
            out[name] = {"rho": None, "p": None, "n": len(pairs),
                         "why": "needs at least 3 cells and some spread in both heads and harmful score"}
            continue
        rho, p = spearmanr(xs, ys)
        out[name] = {"rho": float(rho), "p": float(p), "n": len(pairs)}
    return out
