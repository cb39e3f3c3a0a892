"""Survival plots (headless, matplotlib ``Figure`` objects, no pyplot state).

* :func:`plot_km_by_risk`: Kaplan-Meier curves of the predicted high- and low-risk
  groups, with the log-rank p-value.
* :func:`plot_calibration`: predicted vs observed (Kaplan-Meier) survival at a horizon,
  per predicted-risk quantile group.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from milkit.metrics.survival import Record, survival_array, breslow_survival, record_arrays


def _km(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kaplan-Meier (times [k], survival [k], log-log 95 % band [2, k]) via scikit-survival."""
    from sksurv.nonparametric import kaplan_meier_estimator

    t, s, ci = kaplan_meier_estimator(event, time, conf_type="log-log")
    return t, s, ci


def _km_at(time: np.ndarray, event: np.ndarray, horizon: float) -> tuple[float, float, float]:
    """KM survival and 95 % band at ``horizon``; NaN past the last follow-up unless the curve reached 0."""
    if time.size == 0:
        return float("nan"), float("nan"), float("nan")
    t, s, ci = _km(time, event)
    if horizon > t[-1] and s[-1] > 0:
        return float("nan"), float("nan"), float("nan")
    k = np.searchsorted(t, horizon, side="right") - 1                   # last step at or before horizon
    if k < 0:
        return 1.0, 1.0, 1.0
    return float(s[k]), float(ci[0, k]), float(ci[1, k])


def plot_km_by_risk(records: Sequence[Record], threshold: float, path: Path) -> float:
    """Kaplan-Meier curves of slides with risk > ``threshold`` (high) vs <= (low).

    Args:
        records: evaluated slides with ``time``, ``event`` and ``risk``.
        threshold: split point, normally the median risk of the *training* split (so the
            groups are defined without looking at the evaluated outcomes).
        path: PNG file to write (parent folders are created).

    Returns:
        The log-rank p-value (sksurv ``compare_survival``); NaN when a group is empty or
        has no event to compare.
    """
    from sksurv.compare import compare_survival

    time, event, risk = record_arrays(records)
    high = risk > threshold
    p_value = float("nan")
    if high.any() and (~high).any() and event.any():
        try:
            p_value = float(compare_survival(survival_array(time, event), high.astype(int))[1])
        except ValueError:
            pass
    fig = Figure(figsize=(6, 4.5), dpi=100)
    ax = fig.subplots()
    for name, members, color in (("low risk", ~high, "tab:blue"), ("high risk", high, "tab:red")):
        if not members.any():
            continue
        t, s, ci = _km(time[members], event[members])
        t, s = np.r_[0.0, t], np.r_[1.0, s]
        label = f"{name} (n={int(members.sum())}, events={int(event[members].sum())})"
        ax.step(t, s, where="post", color=color, label=label)
        ax.fill_between(t, np.r_[1.0, ci[0]], np.r_[1.0, ci[1]], step="post", color=color, alpha=0.15)
    p_text = "undefined" if np.isnan(p_value) else f"{p_value:.3g}"
    ax.set_title(f"Kaplan-Meier by predicted risk (split at {threshold:.3g}); log-rank p = {p_text}")
    ax.title.set_fontsize(9)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    _save(fig, path)
    return p_value


def plot_calibration(
    records: Sequence[Record],
    train_records: Sequence[Record],
    horizon: float,
    path: Path,
    *,
    n_groups: int = 4,
) -> list[dict[str, Any]]:
    """Predicted vs observed survival at ``horizon`` per predicted-risk quantile group.

    Predicted survival is the mean over the group of S0(horizon) ** exp(risk), S0 the
    Breslow baseline of the training risks; observed is the group's Kaplan-Meier
    estimate (with its log-log 95 % band). A well-calibrated model lies on the diagonal.

    Returns:
        One dict per non-empty group: ``group``, ``n``, ``predicted``, ``observed``,
        ``low``, ``high`` (observed is NaN past the group's last follow-up, unless its
        Kaplan-Meier curve already reached 0).
    """
    time, event, risk = record_arrays(records)
    tr_time, tr_event, tr_risk = record_arrays(train_records)
    horizon = float(min(horizon, tr_time.max()))
    pred = breslow_survival(tr_risk, tr_time, tr_event, risk, np.array([horizon]))[:, 0]  # n
    edges = np.quantile(risk, np.linspace(0, 1, n_groups + 1)[1:-1]) if risk.size else np.array([])
    group = np.searchsorted(edges, risk, side="left")                   # 0 = lowest risk
    rows: list[dict[str, Any]] = []
    for g in range(n_groups):
        members = group == g
        if not members.any():
            continue
        obs, low, high = _km_at(time[members], event[members], horizon)
        rows.append({"group": g + 1, "n": int(members.sum()), "predicted": float(pred[members].mean()),
                     "observed": obs, "low": low, "high": high})
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="ideal")
    x = np.array([r["predicted"] for r in rows])
    y = np.array([r["observed"] for r in rows])
    err = np.abs(np.array([[r["observed"] - r["low"], r["high"] - r["observed"]] for r in rows]).T)
    if rows:
        ax.errorbar(x, y, yerr=err, fmt="o-", color="tab:purple", capsize=3, label="risk quantile groups")
        for r in rows:
            ax.annotate(f"Q{r['group']} (n={r['n']})", (r["predicted"], r["observed"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"predicted survival at t={horizon:g}")
    ax.set_ylabel(f"observed (Kaplan-Meier) survival at t={horizon:g}")
    ax.set_title("Calibration by predicted-risk group", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)
    return rows


def _save(fig: Figure, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
