"""``write_run_plots(run_dir)``: every plot of a run into ``RUN/plots/`` plus ``plots/index.json``.

Core draws what every run has (training curves, attention heatmaps); the task's own plots
come from the run's head (:meth:`milkit.Head.plots`), so a plugin head brings its own.
Each plot is attempted on its own: a failure becomes a note in report.html, never an error.
"""

import tomllib
from pathlib import Path
from typing import Any

from milkit.viz import rundata
from milkit.viz.plots import plot_training_curves
from milkit.viz.sink import PlotSink


def write_run_plots(run_dir: Path | str, *, heatmaps: int = 3, registries: Any = None) -> list[Path]:
    """Write the run's plots (and ``heatmaps`` attention maps of test slides) into ``RUN/plots/``.

    Returns:
        The files written, ``plots/index.json`` last.
    """
    run_dir = Path(run_dir)
    sink = PlotSink(run_dir / "plots")
    sink.dir.mkdir(parents=True, exist_ok=True)
    metrics = sink.attempt("metrics.json", lambda: rundata.load_metrics(run_dir)) or {}
    sink.attempt("training curves", lambda: _curves(run_dir, metrics, sink))
    records = sink.attempt("predictions.csv", lambda: rundata.load_predictions(run_dir)) or []
    head = sink.attempt("task plots", lambda: head_class(run_dir, metrics, registries))
    split = rundata.eval_split(records)
    if split is None and records:
        sink.note("predictions.csv has neither a test nor a val split: no evaluation plots")
    elif split is not None and head is not None:
        run = rundata.RunView(run_dir, metrics, records, split)
        sink.attempt(f"plots of head '{head.name}'", lambda: head.plots(run, sink))
    if heatmaps:
        from milkit.viz.run_heatmaps import write_run_heatmaps

        sink.attempt("heatmaps", lambda: write_run_heatmaps(run_dir, sink, n=heatmaps, head=head,
                                                            registries=registries))
    return [sink.dir / item["file"] for item in sink.items] + [sink.write()]


def head_class(run_dir: Path, metrics: dict[str, Any], registries: Any = None) -> type:
    """The head class that trained the run (its name from metrics.json, else recipe.toml)."""
    from milkit.errors import MilkitError

    name = metrics.get("head")
    if not name:
        recipe = tomllib.loads((run_dir / "recipe.toml").read_text())
        name = recipe.get("head", {}).get("name")
    if registries is None:
        from milkit.plugins import get_plugin_manager
        from milkit.registry import build_registries

        registries = build_registries(get_plugin_manager())
    if name not in registries.heads:
        raise MilkitError(f"the run's head {name!r} is not installed; {registries.heads.unknown_message(str(name))}")
    return registries.heads.get(name)


def _curves(run_dir: Path, metrics: dict[str, Any], sink: PlotSink) -> None:
    epochs = rundata.fold_epochs(run_dir)
    if not epochs:
        sink.note("training curves: no fold_<k>/metrics.jsonl found")
        return
    monitor = metrics.get("monitor") or "loss"
    best = {int(f["fold"]): f.get("best_epoch") for f in metrics.get("folds", [])}
    path = plot_training_curves(epochs, monitor, sink.dir / "training_curves.png", best)
    sink.add(path, "Training curves", f"Loss and validation {monitor} per epoch for {len(epochs)} fold(s); "
             "the dot marks the checkpoint that was evaluated.")
