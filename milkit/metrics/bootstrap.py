"""Percentile bootstrap confidence intervals over slides (prediction records).

Two entry points share one resampling scheme: :func:`bootstrap_ci` calls any metric
function once per resample (library code, exact but ~ms per call), and
:func:`bootstrap_ci_batched` takes a function that scores every resample at once
(numpy over an index matrix). :func:`classification_resampled` is such a function for
the classification metrics; it is tested to agree with scikit-learn resample by resample.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

Record = Mapping[str, Any]
Interval = tuple[float, float]


def bootstrap_indices(n: int, n_boot: int, *, seed: int = 0, strata: Sequence[Any] | None = None) -> np.ndarray:
    """Resampling indices [n_boot, n], drawn with replacement (within each stratum if given)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n))
    keys = np.asarray([str(s) for s in strata])
    cols = []
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)                          # m
        cols.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
    return np.concatenate(cols, axis=1) if cols else np.zeros((n_boot, 0), dtype=int)


def percentile_intervals(values: Mapping[str, np.ndarray], alpha: float = 0.05) -> dict[str, Interval]:
    """(low, high) percentile interval of each metric's resampled values; NaN values are skipped."""
    out: dict[str, Interval] = {}
    for name, vals in values.items():
        vals = np.asarray(vals, dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            low, high = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
            out[name] = (float(low), float(high))
    return out


def bootstrap_ci(
    records: Sequence[Record],
    metric_fn: Callable[[list[Record]], Mapping[str, float]],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify_key: str | None = None,
) -> dict[str, Interval]:
    """Percentile bootstrap CI of every metric ``metric_fn(records)`` returns.

    Records (one per slide) are resampled with replacement, within groups of
    ``record[stratify_key]`` when given. Resamples where a metric is undefined (NaN or
    an exception) are skipped for that metric.

    Returns:
        ``{name: (low, high)}``, the ``alpha/2`` and ``1 - alpha/2`` quantiles.
    """
    records = list(records)
    strata = [r[stratify_key] for r in records] if stratify_key else None
    idx = bootstrap_indices(len(records), n_boot, seed=seed, strata=strata)
    values: dict[str, np.ndarray] = {}
    for b, row in enumerate(idx):
        try:
            result = metric_fn([records[i] for i in row])
        except (ValueError, ZeroDivisionError, FloatingPointError):
            continue
        for name, value in result.items():
            values.setdefault(name, np.full(n_boot, np.nan))[b] = value
    return percentile_intervals(values, alpha)


def bootstrap_ci_batched(
    records: Sequence[Record],
    batch_fn: Callable[[Sequence[Record], np.ndarray], Mapping[str, np.ndarray]],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify_key: str | None = None,
) -> dict[str, Interval]:
    """As :func:`bootstrap_ci`, but ``batch_fn(records, idx [n_boot, n])`` scores all resamples at once.

    ``batch_fn`` returns ``{name: values [n_boot]}`` with NaN where a metric is undefined.
    """
    strata = [r[stratify_key] for r in records] if stratify_key else None
    idx = bootstrap_indices(len(records), n_boot, seed=seed, strata=strata)
    return percentile_intervals(batch_fn(records, idx), alpha)


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row of scores/positive [B, n] (ties count 1/2); NaN if one class is absent."""
    ranks = rankdata(scores, axis=1)                                   # b n, average ranks for ties
    n_pos = positive.sum(1)
    n_neg = positive.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def classification_resampled(records: Sequence[Record], classes: list[str], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro F1 and macro OvR AUC of every resample ``idx`` [B, n].

    Same definitions as :func:`milkit.metrics.classification.classification_metrics`
    (scikit-learn), computed with bincounts and ranks over all resamples at once.
    """
    targets = [str(r["target"]) for r in records]
    preds = [str(r["pred"]) for r in records]
    labels = list(classes) + sorted(set(targets + preds) - set(classes))  # seen classes first
    code = {c: i for i, c in enumerate(labels)}
    n_boot, n_lab, n_cls = idx.shape[0], len(labels), len(classes)
    y = np.array([code[t] for t in targets], dtype=int)[idx]            # b n
    p = np.array([code[t] for t in preds], dtype=int)[idx]              # b n
    offset = np.arange(n_boot)[:, None] * n_lab                         # b 1

    def counts(values: np.ndarray) -> np.ndarray:
        return np.bincount(values.ravel(), minlength=n_boot * n_lab).reshape(n_boot, n_lab)

    support, predicted, hits = counts(y + offset), counts(p + offset), counts((y + offset)[y == p])  # b l
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)           # b l
        denom = (support + predicted)[:, :n_cls]                         # 2tp + fp + fn
        f1 = np.where(denom > 0, 2 * hits[:, :n_cls] / denom, 0.0)       # b c
    out = {
        "accuracy": (y == p).mean(1),
        "balanced_accuracy": np.nanmean(recall, axis=1) if idx.shape[1] else np.full(n_boot, np.nan),
        "f1_macro": f1.mean(1) if n_cls else np.full(n_boot, np.nan),
    }

    probs = np.array([[r[f"prob_{c}"] for c in classes] for r in records], dtype=float)[idx]  # b n c
    unseen = (y >= n_cls).any(1)                                         # b: a target outside classes
    present = support[:, :n_cls] > 0                                     # b c
    if n_cls == 2:
        auc = _rank_auc(probs[:, :, 1], y == 1)
    else:
        kept = probs * present[:, None, :]                               # renormalise over present classes
        kept = kept / kept.sum(-1, keepdims=True).clip(1e-12)
        per_class = np.stack([_rank_auc(kept[:, :, c], y == c) for c in range(n_cls)], 1)  # b c
        per_class = np.where(present, per_class, np.nan)
        with np.errstate(invalid="ignore"):
            auc = np.nansum(per_class, 1) / present.sum(1)
    out["auc_macro"] = np.where(unseen | (present.sum(1) < 2), np.nan, auc)
    return out


def classification_ci(
    records: Sequence[Record], classes: list[str], *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, list[float]]:
    """``<metric>_ci95: [low, high]`` for accuracy, balanced accuracy, macro F1 and macro AUC.

    Resampling is stratified by the true class (as pROC's default for AUC), so each
    resample keeps the class counts of the evaluated split.
    """
    if not records:
        return {}
    intervals = bootstrap_ci_batched(
        records, lambda recs, idx: classification_resampled(recs, classes, idx),
        n_boot=n_boot, alpha=alpha, seed=seed, stratify_key="target",
    )
    suffix = f"_ci{round(100 * (1 - alpha))}"
    return {f"{name}{suffix}": [low, high] for name, (low, high) in intervals.items()}
