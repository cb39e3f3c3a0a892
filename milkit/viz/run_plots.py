"""``write_run_plots(run_dir)``: every plot of a run into ``RUN/plots/`` plus ``plots/index.json``.

Each plot is attempted on its own: a failure is logged and recorded in the index as a note
(shown in report.html), never raised, so a plotting bug cannot crash a finished run.
"""

import json
import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from milkit.viz import rundata
from milkit.viz.plots import plot_confusion, plot_roc, plot_training_curves, report_table_rows

log = logging.getLogger("milkit")
INDEX = "index.json"


class _Index:
    """What was written (files with title and caption) and what failed (notes)."""

    def __init__(self, plots_dir: Path) -> None:
        self.dir = plots_dir
        self.items: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def attempt(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # plotting must never crash a run
            log.warning("plot '%s' failed: %s: %s", what, type(exc).__name__, exc, exc_info=True)
            self.notes.append(f"{what}: not drawn ({type(exc).__name__}: {exc})")
            return None

    def add(self, path: Path, title: str, caption: str = "", kind: str = "image", section: str = "plots") -> None:
        self.items.append({"file": str(Path(path).relative_to(self.dir)), "title": title, "caption": caption,
                           "kind": kind, "section": section})

    def write(self) -> Path:
        path = self.dir / INDEX
        path.write_text(json.dumps({"items": self.items, "notes": self.notes}, indent=1))
        return path


def write_run_plots(run_dir: Path | str, *, heatmaps: int = 3, registries: Any = None) -> list[Path]:
    """Write the run's plots (and ``heatmaps`` attention maps of test slides) into ``RUN/plots/``.

    Returns:
        The files written, ``plots/index.json`` last.
    """
    run_dir = Path(run_dir)
    index = _Index(run_dir / "plots")
    index.dir.mkdir(parents=True, exist_ok=True)
    metrics = index.attempt("metrics.json", lambda: rundata.load_metrics(run_dir)) or {}
    index.attempt("training curves", lambda: _curves(run_dir, metrics, index))
    records = index.attempt("predictions.csv", lambda: rundata.load_predictions(run_dir)) or []
    task, split = rundata.task_of(records), rundata.eval_split(records)
    if split is None and records:
        index.notes.append("predictions.csv has neither a test nor a val split: no evaluation plots")
    elif split is not None:
        rows = rundata.of_split(records, split)
        n_folds = len({int(r["fold"]) for r in rows})
        pooled = f"{split} split" + (f", {n_folds} folds pooled" if n_folds > 1 else "")
        if task == "classification":
            index.attempt("ROC curves", lambda: _roc(rows, pooled, index))
            index.attempt("confusion matrix", lambda: _confusion(rows, pooled, index))
        elif task == "survival":
            index.attempt("Kaplan-Meier by risk group", lambda: _km(run_dir, rows, split, index))
            index.attempt("calibration", lambda: _calibration(run_dir, metrics, split, index))
        elif task == "report":
            index.attempt("report table", lambda: _report_table(rundata.of_split(records, split, 0), split, index))
    if heatmaps:
        from milkit.viz.run_heatmaps import write_run_heatmaps

        index.attempt("heatmaps", lambda: write_run_heatmaps(run_dir, index, n=heatmaps, registries=registries))
    return [index.dir / item["file"] for item in index.items] + [index.write()]


def _curves(run_dir: Path, metrics: dict[str, Any], index: _Index) -> None:
    epochs = rundata.fold_epochs(run_dir)
    if not epochs:
        index.notes.append("training curves: no fold_<k>/metrics.jsonl found")
        return
    monitor = metrics.get("monitor") or "loss"
    best = {int(f["fold"]): f.get("best_epoch") for f in metrics.get("folds", [])}
    path = plot_training_curves(epochs, monitor, index.dir / "training_curves.png", best)
    index.add(path, "Training curves", f"Loss and validation {monitor} per epoch for {len(epochs)} fold(s); "
              "the dot marks the checkpoint that was evaluated.")


def _classes(rows: list[dict[str, Any]]) -> list[str]:
    return [k[len("prob_"):] for k in rows[0] if k.startswith("prob_")]


def _roc(rows: list[dict[str, Any]], pooled: str, index: _Index) -> None:
    classes = _classes(rows)
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])  # n c
    path = plot_roc([str(r["target"]) for r in rows], probs, classes, index.dir / "roc.png",
                    title=f"ROC per class, one-vs-rest ({pooled}, n={len(rows)})")
    index.add(path, "ROC curves", f"One-vs-rest ROC per class on the {pooled}.")


def _confusion(rows: list[dict[str, Any]], pooled: str, index: _Index) -> None:
    path = plot_confusion([str(r["target"]) for r in rows], [str(r["pred"]) for r in rows], _classes(rows),
                          index.dir / "confusion_matrix.png", title=f"Confusion matrix ({pooled}, n={len(rows)})")
    index.add(path, "Confusion matrix", f"Rows: true class; columns: predicted class ({pooled}).")


def _threshold(run_dir: Path, fold: int) -> tuple[float, str]:
    """Median training risk of ``fold``, else its validation median (and which one was used)."""
    for split, what in (("train", "training"), ("val", "validation")):
        records = rundata.fold_records(run_dir, fold, split)
        if records:
            return float(statistics.median(float(r["risk"]) for r in records)), what
    raise ValueError(f"fold {fold} has neither train nor val risks to define the risk groups")


def _km(run_dir: Path, rows: list[dict[str, Any]], split: str, index: _Index) -> None:
    from milkit.viz.survival_plots import plot_km_by_risk

    folds = sorted({int(r["fold"]) for r in rows})
    cuts = {f: _threshold(run_dir, f) for f in folds}
    sources = sorted({what for _, what in cuts.values()})
    if len(folds) == 1:
        records, threshold = rows, cuts[folds[0]][0]
        how = f"split at the {sources[0]} median risk"
    else:  # each fold's risks centred on its own cut, so one threshold (0) splits the pooled slides
        records = [{**r, "risk": float(r["risk"]) - cuts[int(r["fold"])][0]} for r in rows]
        threshold, how = 0.0, f"risk centred on each fold's {' / '.join(sources)} median, split at 0"
    p = plot_km_by_risk(records, threshold, index.dir / "km_by_risk.png")
    warn = " (no training predictions were available: the groups use the validation median)" if "validation" in sources else ""
    index.add(index.dir / "km_by_risk.png", "Kaplan-Meier by predicted risk",
              f"{split} slides, {how}{warn}; log-rank p = {p:.3g}.")


def _calibration(run_dir: Path, metrics: dict[str, Any], split: str, index: _Index) -> None:
    from milkit.viz.survival_plots import plot_calibration

    records = rundata.fold_records(run_dir, 0, split)
    train = rundata.fold_records(run_dir, 0, "train")
    if not records or not train:
        index.notes.append("calibration: needs fold 0's training-split risks (Breslow baseline); not drawn")
        return
    horizons = (metrics.get("folds") or [{}])[0].get("metrics", {}).get(split, {}).get("horizons") or []
    events = [float(r["time"]) for r in train if int(float(r["event"]))]
    horizon = float(horizons[len(horizons) // 2]) if horizons else float(statistics.median(events or [1.0]))
    plot_calibration(records, train, horizon, index.dir / "calibration.png")
    index.add(index.dir / "calibration.png", "Calibration",
              f"Fold 0, {split} split: predicted (Breslow) vs observed (Kaplan-Meier) survival at t={horizon:g} "
              "per predicted-risk quartile.")


def _report_table(rows: list[dict[str, Any]], split: str, index: _Index) -> None:
    table = report_table_rows(rows, n=10)
    path = index.dir / "report_samples.json"
    path.write_text(json.dumps(table, indent=1))
    index.add(path, "Generated vs reference reports",
              f"{len(table)} {split} slides of fold 0 (a fixed sample), with per-report BLEU-4 and ROUGE-L.",
              kind="table")
