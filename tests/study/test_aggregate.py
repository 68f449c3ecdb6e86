"""Seeds grouped into one entry (mean, sd, pooled Wilson interval) and the heads-harm correlation, against
hand-computed values."""

from __future__ import annotations

import math

import pytest

from surgerycli.study.aggregate import aggregate, correlation


def cell(seed, hs, fa, heads, sig=None, method="surgery", alpha=300.0, lr="1e-4", n=100, status="ok"):
    return {"name": f"c{seed}-{method}-{lr}", "status": status, "method": method, "alpha": alpha,
            "grid": {"train.learning_rate": lr}, "poison_ratio": 0.1, "seed": seed,
            "harmful_score": hs, "hs_n": n, "hs_ci95": None, "accuracy": fa, "fa_n": n, "fa_ci95": None,
            "positive_heads_before": 70, "positive_heads_after": heads, "significant_positive_heads_after": sig}


def test_two_seeds_by_hand():
    """HS 10/100 and 30/100: mean 20, sd sqrt(((10-20)^2 + (30-20)^2) / 1) = 14.142; pooled 40/200 = 20% with
    Wilson [15.05, 26.09] (p 0.2, z 1.96: centre 0.20566, half-width 0.05520); FA 50 and 60: pooled 110/200,
    Wilson [48.08, 61.74] (centre 0.54907, half-width 0.06830)."""
    groups = aggregate([cell(0, 10.0, 50.0, 4, 1), cell(1, 30.0, 60.0, 6, 3), cell(0, 90.0, 40.0, 80, method="sft", alpha=None)])
    assert len(groups) == 2
    g = groups[0]
    assert g["seeds"] == [0, 1] and g["grid"] == {"train.learning_rate": "1e-4"}
    assert g["hs"]["mean"] == pytest.approx(20.0) and g["hs"]["std"] == pytest.approx(math.sqrt(200))
    assert (g["hs"]["k"], g["hs"]["n"]) == (40, 200) and g["hs"]["pooled"] == pytest.approx(20.0)
    assert g["hs"]["ci95"] == pytest.approx([15.05, 26.09], abs=0.01)
    assert g["fa"]["mean"] == pytest.approx(55.0) and g["fa"]["ci95"] == pytest.approx([48.08, 61.74], abs=0.01)
    assert g["positive_heads_after"] == 5.0 and g["significant_positive_heads_after"] == 2.0
    sft = groups[1]
    assert sft["hs"]["std"] is None and sft["hs"]["mean"] == 90.0  # one seed: no spread to report


def test_failed_cells_and_other_grid_values_stay_apart():
    groups = aggregate([cell(0, 10.0, 50.0, 4), cell(1, 30.0, 50.0, 4, status="failed"), cell(0, 70.0, 50.0, 4, lr="5e-4")])
    assert [(g["grid"]["train.learning_rate"], g["seeds"]) for g in groups] == [("1e-4", [0]), ("5e-4", [0])]


def test_spearman_by_hand():
    """Heads 1..5 against HS 10, 20, 15, 40, 50: HS ranks 1, 3, 2, 4, 5, sum d^2 = 2, rho = 1 - 6*2/(5*24) = 0.9;
    t = 0.9 sqrt(3 / 0.19) = 3.576 on 3 degrees of freedom, two-sided p = 0.0374."""
    cells = [cell(i, hs, 50.0, heads, sig=5 - heads) for i, (heads, hs) in enumerate(zip([1, 2, 3, 4, 5], [10, 20, 15, 40, 50]))]
    cells.append(cell(9, 99.0, 50.0, 1, status="failed"))  # a failed cell does not count
    c = correlation(cells)
    assert c["sign"]["rho"] == pytest.approx(0.9) and c["sign"]["p"] == pytest.approx(0.0374, abs=1e-4)
    assert c["sign"]["n"] == 5
    assert c["significant"]["rho"] == pytest.approx(-0.9)  # the significant counts run the other way here


def test_too_few_cells_say_why():
    c = correlation([cell(0, 10.0, 50.0, 3), cell(1, 20.0, 50.0, 4)])
    assert c["sign"]["rho"] is None and c["sign"]["n"] == 2 and "at least 3" in c["sign"]["why"]


def test_a_numeric_one_key_grid_becomes_the_plot_axis():
    from surgerycli.study.plots import numeric_axis

    cells = [cell(0, 1.0, 50.0, 3, lr="1e-4"), cell(0, 2.0, 50.0, 3, lr="5e-4")]
    assert numeric_axis({"cells": cells}) == ("train.learning_rate", {"train.learning_rate=1e-4": 1e-4,
                                                                     "train.learning_rate=5e-4": 5e-4})
    cells[1]["grid"] = {"train.learning_rate": "5e-4", "train.epochs": "3"}
    assert numeric_axis({"cells": cells}) is None  # two keys: a panel per grid point instead
    assert numeric_axis({"cells": [cell(0, 1.0, 50.0, 3, lr="fast"), cell(0, 1.0, 50.0, 3, lr="slow")]}) is None


def test_tables_put_sft_first_and_grid_values_in_numeric_order():
    """Merged sweeps list cells by folder name: lisa before sft, 1e-4 before 1.5e-4 before 5e-5."""
    from surgerycli.study.tables import layout

    cells = [cell(0, 0.0, 50.0, 70, method=m, alpha=None, lr=lr) for m in ("safeinstr", "lisa", "sft")
             for lr in ("1e-4", "1.5e-4", "5e-5")]
    methods, rows, _, _ = layout({"cells": cells})
    assert methods == ["SFT", "Lisa", "SafeInstr"]
    assert [point for point, _ in rows] == ["train.learning_rate=5e-5", "train.learning_rate=1e-4",
                                            "train.learning_rate=1.5e-4"]


@pytest.mark.parametrize("width", [80, 120])
def test_the_printed_tables_label_grid_points_by_short_values_and_cut_nothing(width):
    """At 80 columns (a log, a CI job) as at 120, the tables say `lr 2e-4` for `train.learning_rate=2e-4`, and a
    cell too wide for its column wraps instead of ending in an ellipsis."""
    from rich.console import Console

    from surgerycli.study.tables import paper_table, rich_table, short_point, sweep_table

    assert short_point("train.learning_rate=2e-4, lora.r=8, lisa.rho=1") == "lr 2e-4, rank 8, rho 1"
    assert short_point("") == ""
    cells = [cell(s, 10.0 + s, 50.0, 70, method=m, alpha=a, lr=lr) for m, a in (("sft", None), ("surgery", 300.0))
             for lr in ("1e-4", "2e-4") for s in (0, 1)]
    cells = [{**c, "hs_ci95": [3.3, 17.4], "fa_ci95": [40.4, 59.6]} for c in cells]
    console = Console(width=width, record=True, force_terminal=False)
    grid_rows, paper_rows = sweep_table({"cells": cells})[1], paper_table({"cells": cells})[1]
    assert [r[0] for r in grid_rows] == ["lr 1e-4", "lr 2e-4"]
    assert [r[0] for r in paper_rows] == ["SFT (lr 1e-4)", "Surgery a=300 (lr 1e-4)", "SFT (lr 2e-4)",
                                          "Surgery a=300 (lr 2e-4)"]
    for title, (header, rows) in (("HS and FA", sweep_table({"cells": cells})),
                                  ("The papers' layout", paper_table({"cells": cells}))):
        console.print(rich_table(title, header, rows))
    text = console.export_text()
    assert "…" not in text and "train." not in text
    assert "│ lr 1e-4 │" in text and "│ lr 2e-4 │" in text  # the grid column is never wrapped
    if width == 120:  # wide enough for whole labels; at 80 they wrap inside their cell
        assert "│ Surgery a=300 (lr 2e-4) │" in text
    assert max(len(line) for line in text.splitlines()) <= width


def test_the_plot_draws_each_alignment_stage_defense_before_the_attack_in_its_colour():
    """Vaccine's own alignment cost it FA 48 -> 13 before any attack: sweep.png shows that line (dotted, in
    Vaccine's colour) beside the shared aligned model's; a method with no cells in the sweep gets none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from surgerycli.study.tables import layout
    from surgerycli.study.plots import _before_lines

    cells = [cell(0, 80.0, 60.0, 70, method=m, alpha=None, lr="2e-4") for m in ("sft", "vaccine")]
    sweep = {"cells": cells, "base": {"harmful_score": 0.0, "accuracy": 48.0},
             "aligned_before": {"vaccine": {"harmful_score": 0.0, "accuracy": 13.0},
                                "booster": {"harmful_score": 4.0, "accuracy": 57.0}}}
    methods = layout(sweep)[0]
    fig, ax = plt.subplots()
    _before_lines(ax, sweep, "fa", methods)
    lines = [(line.get_ydata()[0], line.get_linestyle(), line.get_color()) for line in ax.get_lines()]
    plt.close(fig)
    k = methods.index("Vaccine")
    assert lines == [(48.0, "--", "gray"), (13.0, ":", f"C{k}")]
    assert to_rgba(f"C{k}") != to_rgba("gray")


def test_a_printed_table_keeps_bracketed_text():
    """Rich reads "[word ...]" as markup and drops it: the sweep table's title said "FA ...; ; heads+" for
    "[pooled 95% Wilson interval over seeds]"; titles and cells are printed as text."""
    from rich.console import Console

    from surgerycli.study.tables import rich_table

    console = Console(record=True, width=200)
    console.print(rich_table("HS; [pooled 95% Wilson interval over seeds]; heads+", ["[cell]"], [["[lisa] 1.0"]]))
    text = " ".join(console.export_text().split())  # the title wraps at the table's width
    assert "[pooled 95% Wilson interval over seeds]" in text and "[cell]" in text and "[lisa] 1.0" in text


def test_twelve_methods_get_twelve_colours():
    """A search of every configuration draws 12 series: none may share the first ten's colours (matplotlib's cycle
    repeats after 10, which drew SFT and surgery+antidote, Antidote and Vaccine alike)."""
    from matplotlib.colors import to_hex

    from surgerycli.study.plots import series_colour

    colours = [to_hex(series_colour(k)) for k in range(12)]
    assert len(set(colours)) == 12, colours
