"""The task plots of milkit's built-in heads, drawn from a finished run into a :class:`PlotSink`.

Each head's :meth:`milkit.Head.plots` calls the function for its task; a plugin head may
call them too, or draw its own plots with the same sink.
"""

import statistics
from typing import Any

import numpy as np

from milkit.viz.plots import plot_confusion, plot_roc, report_table_rows
from milkit.viz.rundata import RunView
from milkit.viz.sink import PlotSink


def draw_classification_plots(run: RunView, sink: PlotSink) -> None:
    """One-vs-rest ROC curves and the confusion matrix of the evaluation split, folds pooled."""
    sink.attempt("ROC curves", lambda: _roc(run, sink))
    sink.attempt("confusion matrix", lambda: _confusion(run, sink))


def draw_survival_plots(run: RunView, sink: PlotSink) -> None:
    """Kaplan-Meier curves by predicted risk group, and calibration at the middle horizon."""
    sink.attempt("Kaplan-Meier by risk group", lambda: _km(run, sink))
    sink.attempt("calibration", lambda: _calibration(run, sink))


def draw_regression_plots(run: RunView, sink: PlotSink) -> None:
    """Predicted vs true values of the evaluation split, folds pooled (one colour per fold)."""
    sink.attempt("predicted vs true", lambda: _predicted_vs_true(run, sink))


def draw_multitarget_plots(run: RunView, sink: PlotSink) -> None:
    """For each target of a multi-target head: one-vs-rest ROC curves and the confusion matrix of the
    evaluation split, on the slides with a label (records ``<column>/target``, ``/pred``, ``/prob_<class>``)."""
    rows = run.rows
    columns = [k[: -len("/pred")] for k in (rows[0] if rows else {}) if k.endswith("/pred")]
    for i, col in enumerate(columns):
        prefix = f"{col}/"
        records = [{k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)} for r in rows
                   if str(r.get(f"{col}/target", "")) != ""]
        sink.attempt(f"ROC curves of '{col}'", lambda col=col, records=records, i=i: _roc(
            run, sink, records, name=f"roc_{i}_{_safe(col)}.png", what=f"'{col}'"))
        sink.attempt(f"confusion matrix of '{col}'", lambda col=col, records=records, i=i: _confusion(
            run, sink, records, name=f"confusion_matrix_{i}_{_safe(col)}.png", what=f"'{col}'"))


def draw_report_samples(run: RunView, sink: PlotSink, *, n: int = 10) -> None:
    """A table of ``n`` generated vs reference reports of fold 0 with per-report BLEU-4 and ROUGE-L."""
    sink.attempt("report table", lambda: _report_table(run, sink, n))


def _classes(rows: list[dict[str, Any]]) -> list[str]:
    return [k[len("prob_"):] for k in rows[0] if k.startswith("prob_")]


def _safe(name: str) -> str:
    """``name`` with every character but letters, digits, ``-`` and ``_`` replaced (file names)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _roc(run: RunView, sink: PlotSink, rows: list[dict[str, Any]] | None = None, *, name: str = "roc.png",
         what: str = "") -> None:
    rows = run.rows if rows is None else rows
    classes = _classes(rows)
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])  # n c
    of = f" of {what}" if what else ""
    path = plot_roc([str(r["target"]) for r in rows], probs, classes, sink.dir / name,
                    title=f"ROC{of} per class, one-vs-rest ({run.pooled}, n={len(rows)})")
    sink.add(path, f"ROC curves{of}", f"One-vs-rest ROC per class on the {run.pooled}.")


def _confusion(run: RunView, sink: PlotSink, rows: list[dict[str, Any]] | None = None, *,
               name: str = "confusion_matrix.png", what: str = "") -> None:
    rows = run.rows if rows is None else rows
    of = f" of {what}" if what else ""
    path = plot_confusion([str(r["target"]) for r in rows], [str(r["pred"]) for r in rows], _classes(rows),
                          sink.dir / name, title=f"Confusion matrix{of} ({run.pooled}, n={len(rows)})")
    sink.add(path, f"Confusion matrix{of}", f"Rows: true class; columns: predicted class ({run.pooled}).")


def _predicted_vs_true(run: RunView, sink: PlotSink) -> None:
    from milkit.metrics.regression import regression_metrics
    from milkit.viz.regression_plots import plot_predicted_vs_true

    rows = run.rows
    records = [{"target": float(r["target"]), "pred": float(r["pred"])} for r in rows]
    m = regression_metrics(records)
    column = _recipe_value(run, "head", "target_column") or "target"
    path = plot_predicted_vs_true([r["target"] for r in records], [r["pred"] for r in records],
                                  sink.dir / "predicted_vs_true.png", groups=[int(r["fold"]) for r in rows],
                                  label=str(column),
                                  title=f"{column} ({run.pooled}, n={len(rows)})\nR² = {m['r2']:.3f}, "
                                        f"r = {m['pearson_r']:.3f}, MAE = {m['mae']:.3g}")
    sink.add(path, "Predicted vs true", f"Each dot is a slide of the {run.pooled}; dashed: identity, red: least-squares "
                                        "fit of prediction on truth (slope < 1: shrunk towards the mean).")


def _recipe_value(run: RunView, table: str, key: str) -> Any:
    """``[table] key`` of the run's recipe.toml (None when absent or unreadable)."""
    import tomllib

    try:
        return tomllib.loads((run.run_dir / "recipe.toml").read_text()).get(table, {}).get(key)
    except (OSError, tomllib.TOMLDecodeError):
        return None


def _threshold(run: RunView, fold: int) -> tuple[float, str]:
    """Median training risk of ``fold``, else its validation median (and which one was used)."""
    for split, what in (("train", "training"), ("val", "validation")):
        records = run.fold_rows(fold, split)
        if records:
            return float(statistics.median(float(r["risk"]) for r in records)), what
    raise ValueError(f"fold {fold} has neither train nor val risks to define the risk groups")


def _km(run: RunView, sink: PlotSink) -> None:
    from milkit.viz.survival_plots import plot_km_by_risk

    rows = run.rows
    folds = sorted({int(r["fold"]) for r in rows})
    cuts = {f: _threshold(run, f) for f in folds}
    sources = sorted({what for _, what in cuts.values()})
    if len(folds) == 1:
        records, threshold = rows, cuts[folds[0]][0]
        how = f"split at the {sources[0]} median risk"
    else:  # each fold's risks centred on its own cut, so one threshold (0) splits the pooled slides
        records = [{**r, "risk": float(r["risk"]) - cuts[int(r["fold"])][0]} for r in rows]
        threshold, how = 0.0, f"risk centred on each fold's {' / '.join(sources)} median, split at 0"
    p = plot_km_by_risk(records, threshold, sink.dir / "km_by_risk.png")
    warn = " (no training predictions were available: the groups use the validation median)" if "validation" in sources else ""
    sink.add(sink.dir / "km_by_risk.png", "Kaplan-Meier by predicted risk",
             f"{run.split} slides, {how}{warn}; log-rank p = {p:.3g}.")


def _calibration(run: RunView, sink: PlotSink) -> None:
    from milkit.viz.survival_plots import plot_calibration

    records, train = run.fold_rows(0), run.fold_rows(0, "train")
    if not records or not train:
        sink.note("calibration: needs fold 0's training-split risks (Breslow baseline); not drawn")
        return
    horizons = (run.metrics.get("folds") or [{}])[0].get("metrics", {}).get(run.split, {}).get("horizons") or []
    events = [float(r["time"]) for r in train if int(float(r["event"]))]
    horizon = float(horizons[len(horizons) // 2]) if horizons else float(statistics.median(events or [1.0]))
    plot_calibration(records, train, horizon, sink.dir / "calibration.png")
    sink.add(sink.dir / "calibration.png", "Calibration",
             f"Fold 0, {run.split} split: predicted (Breslow) vs observed (Kaplan-Meier) survival at t={horizon:g} "
             "per predicted-risk quartile.")


def _report_table(run: RunView, sink: PlotSink, n: int) -> None:
    from milkit.viz.summary import fmt

    samples = report_table_rows(run.fold_rows(0) or [], n=n)
    rows = [[r["slide_id"], fmt(r["BLEU_4"], 3), fmt(r["ROUGE_L"], 3), r["generated"], r["reference"]] for r in samples]
    sink.add_table("report_samples", "Generated vs reference reports",
                   f"{len(rows)} {run.split} slides of fold 0 (a fixed sample), with per-report BLEU-4 and ROUGE-L.",
                   ["slide", "BLEU-4", "ROUGE-L", "generated", "reference"], rows)
