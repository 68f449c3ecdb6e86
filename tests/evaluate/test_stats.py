"""The 95% Wilson interval against values computed by hand."""

from __future__ import annotations

import math

import pytest

from surgerycli.evaluate.stats import wilson, wilson_percent

# by hand, z = 1.959964, z^2 = 3.841459:
#   n = 10: denominator 1 + z^2/10 = 1.3841459, z^2/(2n) = 0.1920729, z^2/(4n^2) = 0.0096036
#   0/10:  center 0.1920729/1.3841459 = 0.138767, half 1.959964*sqrt(0.0096036)/1.3841459 = 0.138767
#   5/10:  center 0.5, half 1.959964*sqrt(0.025 + 0.0096037)/1.3841459 = 1.959964*0.186020/1.3841459 = 0.263407
#   10/10: the mirror of 0/10
#   3/40:  p 0.075, denominator 1.0960365, center (0.075 + 0.0480182)/1.0960365 = 0.112239,
#          half 1.959964*sqrt(0.0017344 + 0.0006002)/1.0960365 = 1.959964*0.0483178/1.0960365 = 0.086403
HAND = [
    (0, 10, 0.0, 0.277533),
    (5, 10, 0.236593, 0.763407),
    (10, 10, 0.722467, 1.0),
    (3, 40, 0.025836, 0.198642),
]


@pytest.mark.parametrize("k, n, lo, hi", HAND)
def test_wilson_against_hand_computed_values(k, n, lo, hi):
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=3e-6)


def test_percent_form_and_edges():
    assert wilson_percent(0, 40) == [0.0, 100 * wilson(0, 40)[1]]  # unrounded: tables round once
    assert wilson_percent(40, 40)[1] == 100.0 and wilson_percent(40, 40)[0] > 90
    lo, hi = wilson(1, 1)
    assert hi == 1.0 and math.isclose(lo, 1 / (1 + 1.959963984540054 ** 2), rel_tol=1e-9)  # k = n = 1
    with pytest.raises(ValueError):
        wilson(0, 0)
