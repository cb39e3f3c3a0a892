"""Survival metrics: sign convention, agreement with scikit-survival, degenerate splits."""

import math

import numpy as np
import pytest

from milkit.metrics.bootstrap import bootstrap_indices
from milkit.metrics.survival import (
    breslow_survival,
    default_horizons,
    harrell_c_index,
    harrell_c_index_resampled,
    record_arrays,
    survival_metrics,
)


def negate(records: list[dict]) -> list[dict]:
    return [dict(r, risk=-r["risk"]) for r in records]


def test_sign_convention_catches_a_flip(survival_records) -> None:
    train, test = survival_records(200, 0), survival_records(80, 1)
    good = survival_metrics(test, train_records=train, n_boot=0)
    bad = survival_metrics(negate(test), train_records=train, n_boot=0)
    assert good["c_index"] > 0.8 and bad["c_index"] < 0.2
    assert good["c_index_uno"] > 0.8 and bad["c_index_uno"] < 0.2
    assert good["td_auc_mean"] > 0.8 and bad["td_auc_mean"] < 0.2
    assert good["ibs"] < bad["ibs"]
    assert good["warnings"] == []


def test_full_metric_set_is_finite_and_json_ready(survival_records) -> None:
    train, test = survival_records(200, 0), survival_records(60, 2)
    m = survival_metrics(test, train_records=train, n_boot=200)
    assert m["n"] == 60 and m["n_events"] == sum(r["event"] for r in test)
    assert len(m["horizons"]) == 3
    assert all(f"td_auc@{h:g}" in m for h in m["horizons"])
    low, high = m["c_index_ci95"]
    assert low < m["c_index"] < high and high - low < 0.3
    assert 0.0 < m["ibs"] < 0.25


def test_harrell_matches_scikit_survival_and_resampling_matches_each_resample() -> None:
    from sksurv.metrics import concordance_index_censored

    rng = np.random.default_rng(3)
    records = [{"time": float(rng.integers(0, 8)), "event": int(rng.random() < 0.5), "risk": float(rng.integers(0, 5))}
               for _ in range(30)]  # many tied times and tied risks
    time, event, risk = record_arrays(records)
    assert harrell_c_index(records)["c_index"] == concordance_index_censored(event, time, risk)[0]
    idx = bootstrap_indices(30, 200, seed=1)
    batched = harrell_c_index_resampled(records, idx)["c_index"]
    for b in range(200):
        sample = [records[i] for i in idx[b]]
        try:
            ref = harrell_c_index(sample)["c_index"]
        except ValueError:
            ref = math.nan
        assert (math.isnan(ref) and math.isnan(batched[b])) or ref == pytest.approx(batched[b], abs=1e-12)


def test_no_events_and_tiny_splits_give_nan_with_warnings(survival_records) -> None:
    train = survival_records(100, 0)
    censored = [dict(r, event=0) for r in survival_records(20, 1)]
    for records in (censored, censored[:1], []):
        m = survival_metrics(records, train_records=train)
        assert math.isnan(m["c_index"]) and math.isnan(m["c_index_uno"]) and math.isnan(m["ibs"])
        assert any(w.startswith("c_index:") for w in m["warnings"])
    m = survival_metrics(survival_records(30, 1), train_records=[dict(r, event=0) for r in train])
    assert math.isnan(m["td_auc_mean"]) and any("training" in w for w in m["warnings"])


def test_without_train_records_only_harrell_is_defined(survival_records) -> None:
    m = survival_metrics(survival_records(40, 1), n_boot=0)
    assert m["c_index"] > 0.7 and math.isnan(m["c_index_uno"]) and math.isnan(m["ibs"])
    assert any("training records" in w for w in m["warnings"])


def test_follow_up_beyond_training_is_truncated_not_fatal(survival_records) -> None:
    """Slides followed past the training follow-up: every metric defined, and their exact times irrelevant."""
    train, test = survival_records(100, 0), survival_records(40, 1)
    longest = max(r["time"] for r in train)
    far = [dict(r) for r in test]
    farther = [dict(r) for r in test]
    for i in (0, 1):
        far[i].update(time=longest * 2, event=1)
        farther[i].update(time=longest * 5, event=0)
    a = survival_metrics(far, train_records=train, n_boot=0)
    b = survival_metrics(farther, train_records=train, n_boot=0)
    assert np.isfinite(a["c_index_uno"]) and np.isfinite(a["td_auc_mean"]) and np.isfinite(a["ibs"])
    assert any("truncated" in w for w in a["warnings"]) and any("2 slide(s)" in w for w in a["warnings"])
    assert a["horizons"] == b["horizons"] and a["ibs"] == pytest.approx(b["ibs"], rel=1e-12)
    assert all(a[f"td_auc@{h:g}"] == pytest.approx(b[f"td_auc@{h:g}"], rel=1e-12) for h in a["horizons"])


def test_default_horizons_lie_in_test_follow_up() -> None:
    tr_time = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    tr_event = np.array([True, True, True, True, True, False])
    test_time = np.array([2.5, 4.0, 6.0])
    hz = default_horizons(tr_time, tr_event, test_time)
    assert all(2.5 <= h < 6.0 for h in hz) and hz == sorted(hz)
    assert default_horizons(tr_time, np.zeros(6, bool), test_time) == []


def test_breslow_survival_matches_scikit_survival_and_orders_by_risk(survival_records) -> None:
    from sksurv.linear_model.coxph import BreslowEstimator

    train = survival_records(100, 0)
    time, event, risk = record_arrays(train)
    times = np.linspace(0.05, 1.0, 7)
    query = np.array([-1.0, 0.0, 1.5])
    surv = breslow_survival(risk, time, event, query, times)
    ref = BreslowEstimator().fit(risk, event, time).get_survival_function(query)
    np.testing.assert_allclose(surv, np.stack([fn(times) for fn in ref]), rtol=1e-12)
    assert np.all(np.diff(surv, axis=1) <= 0) and np.all(np.diff(surv, axis=0) <= 0)


def test_configured_horizons_outside_follow_up_are_skipped_with_a_warning(survival_records) -> None:
    train, test = survival_records(200, 0), survival_records(60, 1)
    longest = max(r["time"] for r in test)
    m = survival_metrics(test, train_records=train, horizons=[0.2, longest * 2], n_boot=0)
    assert m["horizons"] == [0.2] and np.isfinite(m["td_auc@0.2"])
    assert any("skipped" in w for w in m["warnings"])
