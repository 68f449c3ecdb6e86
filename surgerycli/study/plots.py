"""The pictures of `surgery sweep`, `surgery report` and `surgery demo`: sweep.png (HS and FA per method with
95% Wilson error bars) and correlation.png (harmful score against positive heads, a point per cell)."""

from __future__ import annotations

from pathlib import Path

from ..report.figures import new_figure, save_png
from .grid import part
from .tables import layout, method_label, method_order, point_label, seeded, short_point

_MARKERS = "osD^vPX<>*"  # correlation.png: a shape per method


def series_colour(k: int):
    """The colour of a figure's k-th method: matplotlib's ten, then tab20b's darker hues, so that the 11th
    method (a search of every configuration has 12) is not drawn in the 1st one's colour."""
    if k < 10:
        return f"C{k}"
    import matplotlib

    return matplotlib.colormaps["tab20b"]((k - 10) * 4 % 20)


def numeric_axis(sweep: dict) -> tuple[str, dict[str, float]] | None:
    """(key, point label -> value) when the grid is one numeric key over several values, else None."""
    keys = {k for c in sweep["cells"] for k in (c.get("grid") or {})}
    if len(keys) != 1:
        return None
    key = keys.pop()
    try:
        values = {point_label(c["grid"]): float(c["grid"][key]) for c in sweep["cells"] if c.get("grid")}
    except ValueError:
        return None
    return (key, values) if len(set(values.values())) > 1 else None


def _tick(x: float) -> str:
    """`1.5e-4`, `2e-4` for small or large values (short enough not to collide), else `3`, `0.5`."""
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _legend_beside(fig, axes) -> None:
    """One legend to the right of the panels (it covers no bar), every label once, whichever panel drew it."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def _before_lines(ax, sweep: dict, score: str, methods: list[str]) -> None:
    """The models before the attack as horizontal lines: the shared aligned model in grey, and each
    alignment-stage defense's own aligned model (Vaccine, Booster) dotted in that method's colour, since
    its cost in task accuracy is paid there, before any attack."""
    key = "harmful_score" if score == "hs" else "accuracy"
    if sweep["base"][key] is not None:
        ax.axhline(sweep["base"][key], color="gray", linestyle="--", label="before attack")
    for name, before in (sweep.get("aligned_before") or {}).items():
        labels = {method_label(c) for c in sweep["cells"] if part(c["method"], "align") == name}  # its cells' colour
        k = next((k for k, m in enumerate(methods) if m in labels), None)
        if before.get(key) is not None and k is not None:
            ax.axhline(before[key], color=series_colour(k), linestyle=":",
                       label=f"before attack, {methods[k]}'s alignment")


def _padded(xs: list[float], log: bool) -> tuple[float, float]:
    """The x range of the grid's values with 8% of its span (or of the value) on each side."""
    lo, hi = xs[0], xs[-1]
    if log:
        f = (hi / lo) ** 0.08 if hi > lo else 1.3
        return lo / f, hi * f
    pad = 0.08 * (hi - lo) if hi > lo else 0.3 * (abs(lo) or 1)
    return lo - pad, hi + pad


def _write_axis_plot(path: Path, sweep: dict, judge: str, axis: tuple[str, dict[str, float]], methods: list[str],
                     by_key: dict, ratios: list[float]) -> None:
    """HS and FA per method against the grid's one numeric key (log scale when it spans 4x or more), a row
    per poison ratio, with 95% Wilson error bars (pooled over seeds); each method nudged sideways."""
    key, values = axis
    xs_all = sorted(set(values.values()))
    log = xs_all[-1] / max(xs_all[0], 1e-300) >= 4 and xs_all[0] > 0
    fig, grid_axes = new_figure(len(ratios), 2, (11, 4.2 * len(ratios)))
    over = " (mean over seeds, pooled)" if seeded(sweep) else ""
    panels = [(ax, score, title, ratio) for row, ratio in zip(grid_axes, ratios)
              for ax, (score, title) in zip(row, (("hs", f"harmful score, judge {judge}"), ("fa", "task accuracy %")))]
    for ax, score, title, ratio in panels:
        for k, m in enumerate(methods):
            pts = sorted((values[point], g[score]) for (point, r, label), g in by_key.items()
                         if label == m and r == ratio and g[score] is not None)
            if not pts:
                continue
            nudge = (k - (len(methods) - 1) / 2) * 0.025
            xs = [x * 10 ** nudge if log else x * (1 + nudge) for x, _ in pts]
            ys = [s["mean"] for _, s in pts]
            cis = [s["ci95"] or [y, y] for y, (_, s) in zip(ys, pts)]
            err = [[max(y - c[0], 0) for y, c in zip(ys, cis)], [max(c[1] - y, 0) for y, c in zip(ys, cis)]]
            # a colour per method, the same in every panel (a method missing from one must not shift the rest)
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m, color=series_colour(k))
        _before_lines(ax, sweep, score, methods)
        if log:
            ax.set_xscale("log")
        ax.set_xticks(xs_all, [_tick(x) for x in xs_all])
        ax.set_xlim(*_padded(xs_all, log))  # every panel the same span: a lone point must not sit on the frame
        ax.minorticks_off()
        ax.set_xlabel(key)
        ax.set_ylim(-2, 104)
        ax.set_title(f"{title}{over}, poison ratio {ratio:g}\nerror bars: 95% Wilson interval", fontsize=9)
    _legend_beside(fig, grid_axes.flat)
    fig.tight_layout()
    save_png(fig, path)


def write_sweep_plot(path: Path, sweep: dict, judge: str) -> None:
    """HS and FA per method, with 95% Wilson error bars (pooled over seeds). A grid over one numeric key:
    against that key, a row per poison ratio. Otherwise against poison ratio, one column of panels per grid point:
    lines over several ratios (each method nudged sideways so equal points stay visible), grouped bars at a
    single ratio."""
    methods, rows, by_key, _ = layout(sweep)
    points = list(dict.fromkeys(p for p, _ in rows))
    ratios = sorted({r for _, r in rows})
    axis = numeric_axis(sweep)
    if axis is not None:
        return _write_axis_plot(path, sweep, judge, axis, methods, by_key, ratios)
    if len(points) == 1:  # HS and FA side by side
        fig, grid_axes = new_figure(1, 2, (10, 3.9))
        axes = [[grid_axes[0][0]], [grid_axes[0][1]]]
    else:  # HS above FA, a column per grid point
        fig, axes = new_figure(2, len(points), (5 * len(points) + 0.5, 7.4))
    over = " (mean over seeds, pooled)" if seeded(sweep) else ""
    for j, point in enumerate(points):
        for i, (key, title) in enumerate((("hs", f"harmful score, judge {judge}"), ("fa", "task accuracy %"))):
            ax = axes[i][j]
            _draw_panel(ax, point, key, methods, ratios, by_key)
            _before_lines(ax, sweep, key, methods)
            ax.set_title((f"{short_point(point)}\n" if point else "") + title + over + "\nerror bars: 95% Wilson interval", fontsize=9)
            ax.set_ylim(-2, 112)
    _legend_beside(fig, [ax for column in axes for ax in column])
    fig.tight_layout()
    save_png(fig, path)


def _draw_panel(ax, point: str, key: str, methods: list[str], ratios: list[float], by_key: dict) -> None:
    """One method per colour: grouped bars at a single poison ratio, else lines over the ratios (each method
    nudged sideways so equal points stay visible); error bars from each point's 95% interval."""
    for k, m in enumerate(methods):
        stats = [(r, by_key[point, r, m][key]) for r in ratios if (point, r, m) in by_key and by_key[point, r, m][key]]
        if not stats:
            continue
        offset = k - (len(methods) - 1) / 2
        ys = [s["mean"] for _, s in stats]
        cis = [s["ci95"] or [y, y] for y, (_, s) in zip(ys, stats)]
        err = [[max(y - c[0], 0) for y, c in zip(ys, cis)], [max(c[1] - y, 0) for y, c in zip(ys, cis)]]
        if len(ratios) == 1:
            width = 0.8 / len(methods)
            ax.bar([offset * width], ys, width, yerr=err, capsize=4, label=m, ecolor="0.3", color=series_colour(k))
            ax.text(offset * width, ys[0] + err[1][0] + 1.5, f"{ys[0]:.1f}", ha="center", va="bottom", fontsize=8)
        else:
            step = 0.012 * (ratios[-1] - ratios[0])
            ax.errorbar([r + offset * step for r, _ in stats], ys, yerr=err, marker="o", capsize=3, label=m,
                        color=series_colour(k))
    if len(ratios) == 1:
        ax.set_xticks([0], [f"poison ratio {ratios[0]:g}"])
    else:
        ax.set_xlabel("poison ratio")


def write_correlation_plot(path: Path, cells: list[dict], corr: dict, judge: str) -> None:
    """Harmful score against positive heads after fine-tuning, one point per cell, coloured by method."""
    ok = [c for c in cells if c["status"] == "ok" and c.get("harmful_score") is not None]
    fig, grid_axes = new_figure(1, 2, (10, 3.9))
    axes = grid_axes[0]
    for ax, (name, key, what) in zip(axes, (("sign", "positive_heads_after", "positive heads after (d > 0)"),
                                            ("significant", "significant_positive_heads_after",
                                             "heads with 95% interval above 0, after"))):
        for k, m in enumerate(method_order(ok)):  # the colours of sweep.png
            pts = [(c[key], c["harmful_score"]) for c in ok if method_label(c) == m and c.get(key) is not None]
            if pts:  # hollow, one shape per method: cells of several methods at one point stay visible
                ax.scatter(*zip(*pts), label=m, s=30, marker=_MARKERS[k % len(_MARKERS)], facecolors="none",
                           edgecolors=series_colour(k), linewidths=1.2)
        c = corr[name]
        rho = f"rho {c['rho']:.2f}, p {c['p']:.2g}, N {c['n']}" if c["rho"] is not None else f"N {c['n']}: not computed"
        ax.set_title(f"Spearman {rho}", fontsize=10)
        ax.set_xlabel(what)
        ax.set_ylabel(f"harmful score, judge {judge}")
        ax.set_ylim(-4, 104)
    _legend_beside(fig, axes)
    fig.tight_layout()
    save_png(fig, path)
