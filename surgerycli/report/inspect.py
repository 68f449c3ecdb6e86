"""What `surgery inspect` shows and writes: Rich tables and the divergence heatmap; and the demo's heads.png,
the same map before the attack and after each method, side by side."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .figures import new_figure, save_png


def heads_table(result: dict, top: int) -> Table:
    """The `top` heads by divergence, largest first."""
    d, m, r = result["divergence"], result["harmful"]["sink"], result["harmless"]["sink"]
    heads = sorted(
        ((l, h) for l in range(len(d)) for h in range(len(d[l]))), key=lambda lh: -d[lh[0]][lh[1]]
    )
    ci = result.get("divergence_ci95")
    table = Table(title=f"Top {min(top, len(heads))} heads by sink divergence")
    for col in ("layer", "head", "harmful sink", "harmless sink", "divergence") + (("95% interval",) if ci else ()):
        table.add_column(col, justify="right", no_wrap=True)
    for l, h in heads[:top]:
        style = "red" if d[l][h] > 0 else "blue"
        interval = (f"{ci['low'][l][h]:+.3f}..{ci['high'][l][h]:+.3f}",) if ci else ()
        table.add_row(str(l), str(h), f"{m[l][h]:.4f}", f"{r[l][h]:.4f}", f"[{style}]{d[l][h]:+.4f}[/]", *interval)
    return table


def significant(result: dict) -> list[list[int]] | None:
    """(L, H): +1 where a head's 95% interval lies above 0, -1 below, 0 otherwise; None without intervals."""
    ci = result.get("divergence_ci95")
    if not ci:
        return None
    return [[1 if lo > 0 else -1 if hi < 0 else 0 for lo, hi in zip(los, his)] for los, his in zip(ci["low"], ci["high"])]


def layers_table(result: dict) -> Table:
    """Per-layer means over heads and the count of positive and negative heads."""
    table = Table(title="Sink divergence per layer")
    for col in ("layer", "harmful sink", "harmless sink", "mean divergence", "positive", "negative"):
        table.add_column(col, justify="right")
    for l, d in enumerate(result["divergence"]):
        m, r = result["harmful"]["sink"][l], result["harmless"]["sink"][l]
        mean_d = sum(d) / len(d)
        style = "red" if mean_d > 0 else "blue"
        table.add_row(
            str(l), f"{sum(m) / len(m):.4f}", f"{sum(r) / len(r):.4f}", f"[{style}]{mean_d:+.4f}[/]",
            str(sum(x > 0 for x in d)), str(sum(x < 0 for x in d)),
        )
    return table


def print_summary(console: Console, result: dict, view: str, top: int, bootstrap: int) -> None:
    """The `heads` or `layers` table, then the counts of positive, negative and significant heads."""
    heads = len(result["divergence"]) * len(result["divergence"][0])
    console.print(heads_table(result, top) if view == "heads" else layers_table(result))
    console.print(
        f"[red]{result['positive_heads']} positive[/] / [blue]{result['negative_heads']} negative[/] heads "
        f"of {heads} ({result['harmful']['n_samples']} harmful, {result['harmless']['n_samples']} harmless samples)"
    )
    if "divergence_ci95" in result:
        console.print(f"95% bootstrap interval ({bootstrap} resamples) entirely above 0: "
                      f"[red]{result['significant_positive_heads']}[/] heads, below 0: "
                      f"[blue]{result['significant_negative_heads']}[/]")


def write_heatmap(path: Path, result: dict) -> None:
    """Layers x heads map of divergence, diverging colormap centred at 0 (red: sinks more on harmful)."""
    name = Path(result["model"]).name + (f" + {Path(result['adapter']).name}" if result["adapter"] else "")
    write_head_maps(path, [(name, result)])


def write_head_maps(path: Path, panels: list[tuple[str, dict]]) -> None:
    """One layers x heads divergence map per (title, inspect result), side by side on one colour scale."""
    from matplotlib.colors import TwoSlopeNorm

    maps = [r["divergence"] for _, r in panels]
    L, H = len(maps[0]), len(maps[0][0])
    limit = max(max(abs(x) for d in maps for row in d for x in row), 1e-12)
    norm = TwoSlopeNorm(0.0, -limit, limit)
    width = max(4.0, 0.35 * H + 2.5)
    fig, axes = new_figure(1, len(panels), (width * len(panels), max(3.0, 0.22 * L + 1.5)))
    for ax, (title, r) in zip(axes[0], panels):
        im = ax.imshow(r["divergence"], cmap="RdBu_r", norm=norm, aspect="auto", origin="lower")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        sig = significant(r)
        counts = ""
        if sig is not None:  # a dot on each head whose interval excludes 0
            marked = [(h, l) for l, row in enumerate(sig) for h, v in enumerate(row) if v]
            ax.scatter([h for h, _ in marked], [l for _, l in marked], s=6, c="black", marker="o", linewidths=0)
            counts = f"\n95% CI above / below 0: {r['significant_positive_heads']} / {r['significant_negative_heads']} (dots)"
        ax.set_title(f"{title}\n{r['positive_heads']} positive / {r['negative_heads']} negative heads{counts}",
                     fontsize=10)
    fig.colorbar(im, ax=list(axes[0]), label="sink divergence (harmful - harmless)")
    save_png(fig, path)
