"""What `surgery finetune` draws: training.png, the losses and the defense's metrics against step."""

from __future__ import annotations

from pathlib import Path

from .figures import new_figure, save_png

Panel = tuple[tuple[str, ...], str, tuple[float, float] | None]  # (metrics.jsonl keys, axis label, y range or None)


def write_training_plot(path: Path, records: list[dict], title: str, panels: list[Panel]) -> None:
    """One panel per (keys, label, limits): each key's logged values against step (a legend when several)."""
    steps = [r["step"] for r in records]
    fig, axes = new_figure(1, len(panels), (4.4 * len(panels) + 0.4, 3.6))
    for ax, (keys, label, limits) in zip(axes[0], panels):
        for key in keys:
            pairs = [(s, r[key]) for s, r in zip(steps, records) if r.get(key) is not None]
            if pairs:
                ax.plot(*zip(*pairs), marker=".", label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if limits:
            ax.set_ylim(*limits)
        if len(keys) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path, tight=False)
