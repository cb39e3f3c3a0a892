"""Run plots (headless matplotlib ``Figure``s): training curves, ROC per class, confusion matrix,
and the generated-vs-reference report table (rows for HTML, not an image)."""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay, auc, confusion_matrix, roc_curve

from milkit.atomic import atomic_path


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (temp file, then rename); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_training_curves(epochs: dict[int, list[dict[str, Any]]], monitor: str, path: Path,
                         best_epochs: dict[int, int | None] | None = None) -> Path:
    """Loss (train solid, val dashed) and validation ``monitor`` per epoch, one colour per fold.

    Args:
        epochs: fold -> the entries of ``fold_<k>/metrics.jsonl``.
        monitor: the monitored metric (plotted from ``val_<monitor>``; ``loss`` plots val_loss).
        best_epochs: fold -> selected epoch, marked with a dot on the metric panel.
    """
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_metric = fig.subplots(1, 2)
    key = "val_loss" if monitor == "loss" else f"val_{monitor}"
    for i, (fold, entries) in enumerate(sorted(epochs.items())):
        colour = f"C{i % 10}"
        for name, style in (("train_loss", "-"), ("val_loss", "--")):
            xs = [e["epoch"] for e in entries if _finite(e.get(name))]
            if xs:
                ax_loss.plot(xs, [e[name] for e in entries if _finite(e.get(name))], style, color=colour,
                             label=f"fold {fold} {name.split('_')[0]}")
        xs = [e["epoch"] for e in entries if _finite(e.get(key))]
        if xs:
            ys = [e[key] for e in entries if _finite(e.get(key))]
            ax_metric.plot(xs, ys, "-", color=colour, label=f"fold {fold}")
            best = (best_epochs or {}).get(fold)
            if best in xs:
                ax_metric.plot([best], [ys[xs.index(best)]], "o", color=colour, markersize=7)
    ax_loss.set(title="loss per epoch (train solid, validation dashed)", xlabel="epoch", ylabel="loss")
    ax_metric.set(title=f"validation {monitor} per epoch (dot: selected epoch)", xlabel="epoch", ylabel=monitor)
    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7, ncol=2 if len(epochs) > 3 else 1)
        else:
            ax.text(0.5, 0.5, "no validation epochs recorded", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def plot_roc(y_true: Sequence[str], probs: np.ndarray, classes: Sequence[str], path: Path, *, title: str) -> Path:
    """One-vs-rest ROC curve (scikit-learn ``roc_curve``) per class present with both outcomes; AUC in the legend."""
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    y = np.asarray(y_true)
    for i, c in enumerate(classes):
        positive = y == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, i])
        ax.plot(fpr, tpr, color=f"C{i % 10}", label=f"{c} (AUC {auc(fpr, tpr):.3f}, n+={int(positive.sum())})")
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", transform=ax.transAxes)
    return save_figure(fig, path)


def plot_confusion(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str], path: Path, *,
                   title: str) -> Path:
    """Confusion matrix (rows truth, columns prediction) with counts."""
    with warnings.catch_warnings():  # one class present: the matrix is still correct (labels= is given)
        warnings.simplefilter("ignore", UserWarning)
        cm = confusion_matrix(list(y_true), list(y_pred), labels=list(classes))
    side = 2.2 + 0.55 * len(classes)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.subplots()
    ConfusionMatrixDisplay(cm, display_labels=list(classes)).plot(ax=ax, cmap="Blues", colorbar=False,
                                                                  xticks_rotation=30)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def report_table_rows(records: Sequence[dict[str, Any]], *, n: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """A deterministic sample of ``n`` generated-vs-reference reports with per-report BLEU-4 and ROUGE-L."""
    from milkit.metrics.reports import report_scores_per_sample

    ordered = sorted(records, key=lambda r: str(r["slide_id"]))
    if len(ordered) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(ordered), n, replace=False))
        ordered = [ordered[i] for i in keep]
    generated = [str(r.get("generated") or "") for r in ordered]
    references = [str(r.get("reference") or "") for r in ordered]
    scores = report_scores_per_sample(generated, references) if ordered else []
    return [{"slide_id": str(r["slide_id"]), "generated": g, "reference": ref, "BLEU_4": s["BLEU_4"],
             "ROUGE_L": s["ROUGE_L"]} for r, g, ref, s in zip(ordered, generated, references, scores)]


def plot_compare_curves(out_dir: Path, metric: str, path: Path) -> Path | None:
    """Validation ``metric`` per epoch for each aggregator of a compare dir: mean over its
    (seed, fold) runs, with the min-max band; None when no run logged epochs."""
    import json

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    key = f"val_{metric}"
    runs = Path(out_dir) / "runs"
    labels = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    for i, label_dir in enumerate(labels):
        curves: dict[int, list[float]] = {}
        for log in label_dir.glob("seed_*/fold_*/metrics.jsonl"):
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                if _finite(entry.get(key)):
                    curves.setdefault(int(entry["epoch"]), []).append(float(entry[key]))
        if not curves:
            continue
        epochs = sorted(curves)
        values = [np.asarray(curves[e]) for e in epochs]
        ax.plot(epochs, [v.mean() for v in values], color=f"C{i % 10}", label=label_dir.name)
        ax.fill_between(epochs, [v.min() for v in values], [v.max() for v in values], color=f"C{i % 10}", alpha=0.15)
    if not ax.has_data():
        return None
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=f"validation {metric}")
    ax.set_title(f"validation {metric} per epoch: mean over seeds x folds (band: min-max)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
