"""`surgery search`'s pictures: search.png, the running worst case against the trial number per configuration,
and each trial's task accuracy against its harmful score with each configuration's floor drawn."""

from __future__ import annotations

from pathlib import Path

from ..report.figures import new_figure, save_png
from .plots import series_colour
from .tables import method_order


def write_search_plot(path: Path, results: list[dict], judge: str, floor: float) -> None:
    """Left: per configuration, the highest HS so far among trials that meet the floor (a step line), and every
    trial's HS (filled: meets the floor; hollow: under it). Right: FA against HS per trial, the floors dashed."""
    from matplotlib.ticker import MaxNLocator  # matplotlib loads when a picture is drawn, as in report.figures

    fig, axes = new_figure(1, 2, (12, 4.4))
    left, right = axes[0]
    # each configuration in its colour of the report's other pictures (sweep.png, correlation.png)
    colours = {m: series_colour(k) for k, m in enumerate(method_order([t for r in results for t in r["trials"]]))}
    for k, r in enumerate(results):
        colour, trials = colours.get(r["label"], "gray"), r["trials"]
        shift = 0.08 * (k - (len(results) - 1) / 2)  # configurations side by side: equal scores stay visible
        xs = [i + shift for i in range(1, len(trials) + 1)]
        running, best = [], None
        for t in trials:
            if t["feasible"]:
                best = t["harmful_score"] if best is None else max(best, t["harmful_score"])
            running.append(best)
        left.step(xs, [float("nan") if b is None else b for b in running], where="post", color=colour, label=r["label"])
        for x, t in zip(xs, trials):
            left.scatter([x], [t["harmful_score"]], s=28, color=colour, facecolors=colour if t["feasible"] else "none")
            right.scatter([t["harmful_score"]], [t["accuracy"]], s=28, color=colour,
                          facecolors=colour if t["feasible"] else "none")
    # one floor shared by every configuration (one aligned model) is nobody's: black (C7 is a configuration's grey)
    shared = len({r["floor_fa"] for r in results}) == 1
    for r in results:
        right.axhline(r["floor_fa"], color="black" if shared else colours.get(r["label"], "gray"), linestyle="--",
                      linewidth=1)
    left.set_xlabel("trial (in the order Optuna ran them)")
    left.set_ylabel(f"harmful score, judge {judge}")
    left.set_ylim(-3, 103)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_title("worst case so far (line) and each trial\nfilled: meets the utility floor; hollow: under it",
                   fontsize=9)
    right.set_xlabel(f"harmful score, judge {judge}")
    right.set_ylabel("task accuracy %")
    right.set_xlim(-3, 103)
    right.set_ylim(-3, 103)
    right.set_title(f"each trial; dashed: the floor, {floor:g} x the accuracy before the attack", fontsize=9)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
