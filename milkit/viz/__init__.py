"""Visualisation: attention heatmaps, run plots and the self-contained report.html.

The runner calls ``write_run_plots(run_dir)`` then ``write_run_report(run_dir)`` after every
run, and ``write_compare_report(out_dir)`` after ``milkit compare``; ``milkit heatmap``
calls :func:`heatmap_for_run`. Submodules are imported lazily (matplotlib, torch).
"""

from typing import Any

__all__ = ["HeatmapResult", "NoAttentionError", "heatmap_for_run", "render_heatmap", "write_compare_report",
           "write_run_plots", "write_run_report"]

_WHERE = {"HeatmapResult": "heatmap", "render_heatmap": "heatmap", "NoAttentionError": "attention",
          "heatmap_for_run": "attention", "write_run_plots": "run_plots", "write_run_report": "html",
          "write_compare_report": "html"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"milkit.viz.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'milkit.viz' has no attribute {name!r}")
