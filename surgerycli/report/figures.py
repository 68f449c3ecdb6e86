"""The PNG pictures of every command: a matplotlib figure of its own, saved whole or not at all.

A `matplotlib.figure.Figure` made directly (not through pyplot) renders with the Agg canvas when saved as
PNG, so writing a picture needs no backend switch and leaves pyplot's state, and the host's, as it was.
"""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write


def new_figure(rows: int, cols: int, figsize: tuple[float, float]):
    """(figure, axes as a rows x cols array): pyplot's `subplots(..., squeeze=False)` without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_png(fig, path: Path, dpi: int = 110, tight: bool = True) -> None:
    """The figure as a PNG at `path` (written beside it, then renamed into place)."""
    extra = {"bbox_inches": "tight"} if tight else {}
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", **extra))
