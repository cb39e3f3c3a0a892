"""Summary statistics for a comparison: mean, std, 95 % CI over runs, paired tests against the best."""

import math
from typing import Any

import numpy as np
from scipy import stats


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample std and a Student-t confidence interval over fold×seed runs.

    For metrics whose runs all lie in [0, 1] (accuracies, AUCs, c-indices, BLEU) the interval
    is clipped to [0, 1], where the metric lives.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return {"mean": None, "std": None, "ci95": [None, None], "n": 0}
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * std / math.sqrt(x.size)) if x.size > 1 else 0.0
    low, high = mean - half, mean + half
    if x.min() >= 0.0 and x.max() <= 1.0:
        low, high = max(low, 0.0), min(high, 1.0)
    return {"mean": mean, "std": std, "ci95": [low, high], "n": int(x.size)}


def paired_test(a: list[float], b: list[float], *, method: str = "wilcoxon", seed: int = 0,
                n_boot: int = 10000) -> dict[str, Any]:
    """Compare paired runs (same fold and seed) of two aggregators.

    ``wilcoxon``: two-sided Wilcoxon signed-rank test on the differences (exact for
    small n). ``bootstrap``: percentile CI of the mean paired difference; p is twice the
    share of resampled means on the other side of 0. Differences whose p ≥ 0.05 are
    labelled ``within_noise``. With 5 pairs the smallest possible Wilcoxon p is 0.0625,
    so more folds or seeds are needed to call any difference significant.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    out: dict[str, Any] = {"method": method, "n_pairs": int(d.size), "mean_difference": float(d.mean()) if d.size else None}
    if d.size < 2 or np.allclose(d, 0):
        out.update(p_value=1.0, within_noise=True)
        return out
    if method == "wilcoxon":
        p = float(stats.wilcoxon(d, zero_method="zsplit", alternative="two-sided").pvalue)
    else:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(1)
        out["ci95"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
        p = float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    out.update(p_value=p, within_noise=p >= 0.05)
    return out
