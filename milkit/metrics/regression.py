"""Regression metrics on per-slide prediction records: R², Pearson r, Spearman ρ, MAE, RMSE.

:func:`regression_metrics` scores one split with scikit-learn and SciPy;
:func:`regression_resampled` scores every bootstrap resample at once (numpy over an index
matrix, tested to agree with the library functions resample by resample) and
:func:`regression_ci` turns that into ``<metric>_ci95`` intervals.
"""

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from milkit.metrics.bootstrap import bootstrap_ci_batched

Record = Mapping[str, Any]
METRICS = ("r2", "pearson_r", "spearman_r", "mae", "rmse")
"""The metrics of :func:`regression_metrics` that get a bootstrap interval."""
MINIMISED = ("mae", "rmse", "mae_baseline")
"""Regression metrics where smaller is better."""


def record_arrays(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
    """``target`` and ``pred`` of the records as float arrays [n]."""
    y = np.array([float(r["target"]) for r in records], dtype=float)
    p = np.array([float(r["pred"]) for r in records], dtype=float)
    return y, p


def regression_metrics(records: Sequence[Record], *, baseline: float | None = None) -> dict[str, Any]:
    """R², Pearson r, Spearman ρ, MAE and RMSE of ``records`` (``target`` and ``pred`` per slide).

    R² is 1 - SS_res / SS_tot around the evaluated slides' own mean (scikit-learn's
    ``r2_score``); it is NaN, never ±inf, when the truth is constant, and so are the
    correlations when the truth or the prediction is constant (undefined). ``baseline`` (the
    training mean) adds ``mae_baseline``, the MAE of always predicting it.
    """
    y, p = record_arrays(records)
    nan = float("nan")
    out: dict[str, Any] = {"n": int(y.size)}
    if y.size == 0:
        return {**out, **{m: nan for m in METRICS}, **({"mae_baseline": nan} if baseline is not None else {})}
    varies = bool(np.ptp(y) > 0)
    both_vary = varies and bool(np.ptp(p) > 0) and y.size >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["r2"] = float(r2_score(y, p)) if varies and y.size >= 2 else nan
        out["pearson_r"] = float(pearsonr(y, p).statistic) if both_vary else nan
        out["spearman_r"] = float(spearmanr(y, p).statistic) if both_vary else nan
    out["mae"] = float(mean_absolute_error(y, p))
    out["rmse"] = float(np.sqrt(mean_squared_error(y, p)))
    if baseline is not None:
        out["mae_baseline"] = float(np.abs(y - baseline).mean())
    return out


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair of a, b [B, n]; NaN where a row is constant."""
    constant = (np.ptp(a, axis=1) == 0) | (np.ptp(b, axis=1) == 0) if a.shape[1] else np.ones(a.shape[0], bool)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def regression_resampled(records: Sequence[Record], idx: np.ndarray) -> dict[str, np.ndarray]:
    """R², Pearson r, Spearman ρ, MAE and RMSE of every resample ``idx`` [B, n] at once.

    Same definitions as :func:`regression_metrics` (NaN where undefined).
    """
    y_all, p_all = record_arrays(records)
    y, p = y_all[idx], p_all[idx]                                        # b n
    err = p - y
    ss_res = (err * err).sum(1)
    ss_tot = ((y - y.mean(1, keepdims=True)) ** 2).sum(1)
    constant = np.ptp(y, axis=1) == 0 if idx.shape[1] else np.ones(idx.shape[0], dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(constant, np.nan, 1.0 - ss_res / np.where(constant, 1.0, ss_tot))
    return {
        "r2": r2,
        "pearson_r": _pearson_rows(y, p),
        "spearman_r": _pearson_rows(rankdata(y, axis=1), rankdata(p, axis=1)),   # Pearson of average ranks
        "mae": np.abs(err).mean(1),
        "rmse": np.sqrt((err * err).mean(1)),
    }


def regression_ci(records: Sequence[Record], *, n_boot: int = 1000, alpha: float = 0.05,
                  seed: int = 0) -> dict[str, list[float]]:
    """``<metric>_ci95: [low, high]`` for R², Pearson r, Spearman ρ, MAE and RMSE.

    A percentile bootstrap over slides (not stratified: a continuous target has no classes).
    """
    if not records:
        return {}
    intervals = bootstrap_ci_batched(records, regression_resampled, n_boot=n_boot, alpha=alpha, seed=seed)
    suffix = f"_ci{round(100 * (1 - alpha))}"
    return {f"{name}{suffix}": [low, high] for name, (low, high) in intervals.items()}


def quantile_bins(values: Sequence[float], n_bins: int) -> list[str]:
    """The quantile bin (``"q1"`` ... ``"q<n_bins>"``) of each value; a value on an edge joins the lower bin.

    Edges are the empirical quantiles of ``values``; repeated edges (many equal values) merge
    bins, so fewer than ``n_bins`` may come back.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0 or n_bins < 2:
        return ["all"] * int(x.size)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return [f"q{int(b) + 1}" for b in np.searchsorted(edges, x, side="left")]
