"""What `surgery finetune` draws: training.png, the losses and the defense's metrics against step."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write
from ..train.defenses import Metric


def write_training_plot(path: Path, records: list[dict], title: str, metrics: tuple[Metric, ...] = ()) -> None:
    """The total and SFT losses in the first panel, then one panel per defense metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    panels = [(("loss", "sft_loss"), "loss", None)] + [((m.key,), m.axis or m.key, m.limits) for m in metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 0.4, 3.6), squeeze=False)
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
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
