"""Survival metrics from scikit-survival on per-slide records (``time``, ``event``, ``risk``).

Sign convention everywhere: higher ``risk`` = earlier event (a log hazard ratio).
Undefined metrics (no events, no comparable pairs, follow-up outside the training range)
are NaN with a line in the ``warnings`` list naming the metric and the reason.
"""

import warnings as pywarnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from milkit.metrics.bootstrap import bootstrap_ci_batched

Record = dict[str, Any]
NAN = float("nan")


def record_arrays(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(time float [n], event bool [n], risk float [n])`` from prediction records."""
    time = np.array([float(r["time"]) for r in records], dtype=float)
    event = np.array([bool(int(float(r["event"]))) for r in records], dtype=bool)
    risk = np.array([float(r["risk"]) for r in records], dtype=float)
    return time, event, risk


def survival_array(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """sksurv structured array (event, time)."""
    from sksurv.util import Surv

    return Surv.from_arrays(event=event, time=time)


def default_horizons(train_time: np.ndarray, train_event: np.ndarray, test_time: np.ndarray) -> list[float]:
    """25/50/75 % quantiles of the training event times, clipped into [min, max) of test follow-up."""
    if not train_event.any() or test_time.size < 2 or test_time.min() >= test_time.max():
        return []
    q = np.quantile(train_time[train_event], [0.25, 0.5, 0.75])
    hi = np.nextafter(test_time.max(), -np.inf)
    return sorted({float(v) for v in np.clip(q, test_time.min(), hi)})


def breslow_survival(
    train_risk: np.ndarray, train_time: np.ndarray, train_event: np.ndarray, risk: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """S(t | risk) = S0(t) ** exp(risk), S0 the Breslow baseline fitted on the training risks; [n, T].

    ``times`` must lie within [0, max training time].
    """
    from sksurv.linear_model.coxph import BreslowEstimator

    est = BreslowEstimator().fit(train_risk, train_event, train_time)
    s0 = np.atleast_1d(est.baseline_survival_(np.asarray(times, dtype=float)))  # t
    return s0[None, :] ** np.exp(risk)[:, None]                        # n t


def harrell_c_index(records: Sequence[Record]) -> dict[str, float]:
    """Harrell's concordance (sksurv ``concordance_index_censored``); raises ValueError if undefined."""
    from sksurv.metrics import concordance_index_censored

    time, event, risk = record_arrays(records)
    return {"c_index": float(concordance_index_censored(event, time, risk)[0])}


def harrell_c_index_resampled(
    records: Sequence[Record], idx: np.ndarray, tied_tol: float = 1e-8
) -> dict[str, np.ndarray]:
    """Harrell's C of every resample ``idx`` [B, n] at once; NaN where no pair is comparable.

    Same definition as sksurv's ``concordance_index_censored`` (pairs (i, j) with an event
    at i and t_j > t_i, or t_j == t_i with j censored; tied risks count 1/2), written as
    ``w' A w / w' M w`` with w the per-slide multiplicity in a resample.
    """
    time, event, risk = record_arrays(records)
    n_boot, n = idx.shape[0], time.size
    comparable = event[:, None] & ((time[None, :] > time[:, None]) | (time[None, :] == time[:, None]) & ~event[None, :])
    diff = risk[:, None] - risk[None, :]                               # n n: r_i - r_j
    score = np.where(np.abs(diff) <= tied_tol, 0.5, (diff > 0).astype(float)) * comparable
    w = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    w = w.astype(float)                                                # b n: multiplicities
    num = ((w @ score) * w).sum(1)
    den = ((w @ comparable.astype(float)) * w).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"c_index": np.where(den > 0, num / den, np.nan)}


def survival_metrics(
    records: Sequence[Record],
    *,
    train_records: Sequence[Record] | None = None,
    horizons: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Harrell's and Uno's C, time-dependent AUC, integrated Brier score, and a c-index CI.

    Args:
        records: evaluated slides, each with ``time``, ``event`` (0/1) and ``risk``.
        train_records: the training split's records (with the model's risks); needed for
            the censoring distribution (Uno's C, td-AUC, IBS) and the Breslow baseline (IBS).
        horizons: times for td-AUC; default: quartiles of the training event times,
            clipped into the test follow-up range.
        n_boot: bootstrap resamples for ``c_index_ci95`` (stratified by event); 0 = none.
        seed: bootstrap seed.

    Returns:
        ``c_index``, ``c_index_ci95``, ``c_index_uno``, ``td_auc@<t>`` per horizon,
        ``td_auc_mean``, ``ibs``, ``horizons``, ``n``, ``n_events`` and ``warnings``.
    """
    time, event, risk = record_arrays(records)
    notes: list[str] = []
    out: dict[str, Any] = {"n": int(time.size), "n_events": int(event.sum()), "c_index": NAN}

    def attempt(metric: str, fn: Any) -> Any:
        try:
            with pywarnings.catch_warnings():
                pywarnings.simplefilter("ignore")
                return fn()
        except (ValueError, ZeroDivisionError) as err:
            notes.append(f"{metric}: NaN ({err})")
            return None

    if not event.any():
        notes.append("c_index: NaN (no events among the evaluated slides)")
    else:
        res = attempt("c_index", lambda: harrell_c_index(records))
        out["c_index"] = res["c_index"] if res else NAN
    if n_boot > 0 and np.isfinite(out["c_index"]):
        low, high = bootstrap_ci_batched(
            records, harrell_c_index_resampled, n_boot=n_boot, seed=seed, stratify_key="event"
        )["c_index"]
        out["c_index_ci95"] = [low, high]

    out.update({"c_index_uno": NAN, "td_auc_mean": NAN, "ibs": NAN, "horizons": []})
    if train_records is None or len(train_records) == 0:
        notes.append("c_index_uno, td_auc, ibs: NaN (no training records for the censoring distribution)")
        out["warnings"] = notes
        return out
    tr_time, tr_event, tr_risk = record_arrays(train_records)
    if not tr_event.any() or not event.any():
        notes.append("c_index_uno, td_auc, ibs: NaN (no events in the training or evaluated split)")
        out["warnings"] = notes
        return out
    y_train, y_test = survival_array(tr_time, tr_event), survival_array(time, event)

    from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc, integrated_brier_score

    tau = None if time.max() < tr_time.max() else float(tr_time.max())
    if tau is not None:
        notes.append(f"c_index_uno: truncated at tau={tau:g}, the end of the training follow-up")
    res = attempt("c_index_uno", lambda: concordance_index_ipcw(y_train, y_test, risk, tau=tau)[0])
    out["c_index_uno"] = NAN if res is None else float(res)

    # td-AUC and IBS need the training censoring distribution at each evaluated time, which is
    # undefined past the training follow-up: censor the evaluated slides there (exact for t < end).
    end = float(tr_time.max())
    beyond = time >= end
    if beyond.any():
        notes.append(f"td_auc, ibs: {int(beyond.sum())} slide(s) followed to or past the end of the training "
                     f"follow-up ({end:g}) counted as censored there")
    t_eval, e_eval = np.minimum(time, end), event & ~beyond
    y_eval = survival_array(t_eval, e_eval)

    hz = list(horizons) if horizons is not None else default_horizons(tr_time, tr_event, t_eval)
    outside = [float(h) for h in hz if not t_eval.min() <= h < t_eval.max()]
    if outside:
        notes.append(f"td_auc: horizons {outside} skipped (outside the evaluated follow-up "
                     f"[{t_eval.min():g}, {t_eval.max():g}))")
    hz = sorted({float(h) for h in hz} - set(outside))
    out["horizons"] = hz
    if not hz:
        notes.append("td_auc: NaN (no horizon inside the evaluated follow-up range)")
    else:
        res = attempt("td_auc", lambda: cumulative_dynamic_auc(y_train, y_eval, risk, hz))
        aucs, mean_auc = res if res is not None else (np.full(len(hz), NAN), NAN)
        for h, a in zip(hz, aucs):
            out[f"td_auc@{h:g}"] = float(a)
            if res is not None and not np.isfinite(a):
                notes.append(f"td_auc@{h:g}: NaN (no event before or no survivor after this horizon)")
        out["td_auc_mean"] = float(mean_auc)

    lo, hi = np.quantile(t_eval, [0.1, 0.9])
    hi = min(hi, np.nextafter(t_eval.max(), -np.inf))
    if not lo < hi:
        notes.append("ibs: NaN (evaluated follow-up range too short, or outside the training range)")
    else:
        grid = np.linspace(lo, hi, 50)
        surv = breslow_survival(tr_risk, tr_time, tr_event, risk, grid)
        res = attempt("ibs", lambda: integrated_brier_score(y_train, y_eval, surv, grid))
        out["ibs"] = NAN if res is None else float(res)
    out["warnings"] = notes
    return out
