"""Per-head bootstrap intervals of the sink divergence (`surgery inspect`, sink_before/after.json)."""

from __future__ import annotations

import math

import pytest
import torch

from surgerycli.report.inspect import significant
from surgerycli.sink import bootstrap_ci, summarize


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_bootstrap_matches_a_direct_loop():
    """The counts-matrix bootstrap equals resampling each set by index, one resample at a time, with the
    documented draws (one seeded generator; harmful set first)."""
    torch.manual_seed(1)
    harmful, harmless = torch.rand(7, 2, 3, dtype=torch.float64), torch.rand(5, 2, 3, dtype=torch.float64)
    B = 200
    low, high = bootstrap_ci(harmful, harmless, B, seed=3)
    g = torch.Generator().manual_seed(3)
    idx_m = torch.randint(0, 7, (B, 7), generator=g)
    idx_r = torch.randint(0, 5, (B, 5), generator=g)
    d = torch.stack([harmful[idx_m[b]].mean(0) - harmless[idx_r[b]].mean(0) for b in range(B)])  # (B, L, H)
    d_sorted = d.sort(dim=0).values
    # numpy/torch "linear" quantile: position q * (B - 1) between order statistics
    def quantile(q):
        pos = q * (B - 1)
        lo, frac = int(math.floor(pos)), pos - math.floor(pos)
        return d_sorted[lo] + frac * (d_sorted[lo + 1] - d_sorted[lo])
    torch.testing.assert_close(low, quantile(0.025), rtol=0, atol=1e-12)
    torch.testing.assert_close(high, quantile(0.975), rtol=0, atol=1e-12)


def test_constant_sets_give_a_point_interval():
    """No spread within either set: every resample has the same means, so the interval is d itself."""
    harmful = torch.full((4, 1, 2), 0.3, dtype=torch.float64)
    harmless = torch.tensor([[[0.1, 0.5]]] * 6, dtype=torch.float64)
    s = summarize(harmful, harmless, 100)
    assert s["divergence_ci95"]["low"][0] == [approx(0.2), approx(-0.2)]
    assert s["divergence_ci95"]["high"][0] == [approx(0.2), approx(-0.2)]
    assert (s["significant_positive_heads"], s["significant_negative_heads"]) == (1, 1)
    assert significant(s) == [[1, -1]]


def test_interval_width_matches_the_normal_theory():
    """For two large normal samples the 95% interval of a mean difference is about
    2 * 1.96 * sqrt(s1^2/n1 + s2^2/n2) wide, and a zero-mean-difference head is not significant."""
    g = torch.Generator().manual_seed(0)
    n1, n2, s1, s2 = 400, 300, 0.05, 0.02
    harmful = torch.empty(n1, 1, 2, dtype=torch.float64)
    harmful[:, 0, 0] = 0.30 + s1 * torch.randn(n1, generator=g, dtype=torch.float64)  # d = +0.1: significant
    harmful[:, 0, 1] = 0.20 + s1 * torch.randn(n1, generator=g, dtype=torch.float64)  # d = 0
    harmless = (0.20 + s2 * torch.randn(n2, 1, 2, generator=g, dtype=torch.float64))
    s = summarize(harmful, harmless, 2000)
    low, high = (torch.tensor(s["divergence_ci95"][k]) for k in ("low", "high"))
    width = 2 * 1.959964 * math.sqrt(s1**2 / n1 + s2**2 / n2)
    assert torch.allclose(high - low, torch.full_like(low, width), rtol=0.12)
    assert s["significant_positive_heads"] == 1 and s["significant_negative_heads"] == 0
    assert s["positive_heads"] + s["negative_heads"] == 2  # the sign count still counts both


def test_no_bootstrap_keeps_the_old_schema():
    s = summarize(torch.rand(3, 1, 2), torch.rand(3, 1, 2), 0)
    assert "divergence_ci95" not in s and "significant_positive_heads" not in s
