"""comparison.png: the primary metric per aggregator, every run as a dot, mean and 95 % CI as a bar."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from milkit.atomic import atomic_path


def plot_comparison(rows: list[dict[str, Any]], runs: dict[str, list[float]], metric: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(1.4 * len(rows) + 2.5, 6.5), 4))
    for i, row in enumerate(rows):
        values = [v for v in runs[row["aggregator"]] if v is not None]   # None: this row's head has no such metric
        ax.scatter([i] * len(values), values, color="0.6", s=14, zorder=2)
        stat = row.get(metric)
        if stat is not None and stat["mean"] is not None:
            low, high = stat["ci95"]
            ax.errorbar(i, stat["mean"], yerr=[[stat["mean"] - low], [high - stat["mean"]]], fmt="o", color="C0",
                        capsize=5, zorder=3)
    ax.set_xticks(range(len(rows)), [r["aggregator"] for r in rows], rotation=20)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"test {metric}\nruns (grey), mean and 95 % CI (blue)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
