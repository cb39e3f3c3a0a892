"""Regression plot (headless matplotlib ``Figure``, no pyplot state): predicted vs true values."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from milkit.viz.plots import save_figure


def plot_predicted_vs_true(y_true: Sequence[float], y_pred: Sequence[float], path: Path, *, title: str,
                           groups: Sequence[int] | None = None, label: str = "target") -> Path:
    """Scatter of predicted against true values with the identity line and a least-squares fit.

    Args:
        y_true, y_pred: one value per slide.
        path: PNG file to write (parent folders are created).
        title: figure title (split, number of slides, R²).
        groups: a fold per slide, one colour each (None: one colour).
        label: what the values are, for the axis labels.
    """
    y, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    fig = Figure(figsize=(4.8, 4.6))
    ax = fig.subplots()
    keys = np.zeros(len(y), dtype=int) if groups is None else np.asarray(groups, dtype=int)
    for i, g in enumerate(np.unique(keys)):
        sel = keys == g
        ax.scatter(y[sel], p[sel], s=18, alpha=0.75, color=f"C{i % 10}",
                   label=f"fold {g}" if groups is not None and len(np.unique(keys)) > 1 else None)
    if y.size:
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.5", lw=1, ls="--", label="identity")
        if y.size >= 2 and np.ptp(y) > 0:
            slope, intercept = np.polyfit(y, p, 1)
            xs = np.array([low - pad, high + pad])
            ax.plot(xs, slope * xs + intercept, color="C3", lw=1.2, label=f"fit (slope {slope:.2f})")
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
