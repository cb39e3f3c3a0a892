"""Percentile bootstrap: resampling, undefined resamples, and the vectorised classification path."""

import math
import warnings

import numpy as np
import pytest

from milkit.components.heads.classification import Classification, ClassificationConfig
from milkit.metrics.bootstrap import (
    bootstrap_ci,
    bootstrap_indices,
    classification_ci,
    classification_resampled,
    percentile_intervals,
)
from milkit.metrics.classification import classification_metrics


def class_records(classes: list[str], n: int, seed: int, unseen: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        p = rng.dirichlet(np.ones(len(classes)))
        target = classes[rng.integers(len(classes))] if not (unseen and i == 0) else "never_seen"
        records.append({"slide_id": f"s{i}", "target": target, "pred": classes[int(p.argmax())],
                        **{f"prob_{c}": float(v) for c, v in zip(classes, p)}})
    return records


def test_indices_are_reproducible_and_keep_stratum_counts() -> None:
    strata = ["a"] * 3 + ["b"] * 7
    idx = bootstrap_indices(10, 50, seed=4, strata=strata)
    assert idx.shape == (50, 10) and np.array_equal(idx, bootstrap_indices(10, 50, seed=4, strata=strata))
    assert np.all((idx < 3).sum(1) == 3)
    assert not np.array_equal(idx, bootstrap_indices(10, 50, seed=5, strata=strata))


def test_ci_of_a_mean_matches_the_normal_approximation() -> None:
    values = np.random.default_rng(0).normal(size=200)
    records = [{"x": float(v)} for v in values]
    low, high = bootstrap_ci(records, lambda rs: {"mean": np.mean([r["x"] for r in rs])}, n_boot=2000)["mean"]
    half = 1.96 * values.std() / math.sqrt(200)
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_undefined_resamples_are_skipped() -> None:
    records = [{"x": i} for i in range(10)]

    def only_with_zero(rs: list[dict]) -> dict[str, float]:
        if not any(r["x"] == 0 for r in rs):
            raise ValueError("undefined")
        return {"max": max(r["x"] for r in rs), "nan": float("nan")}

    out = bootstrap_ci(records, only_with_zero, n_boot=200)
    assert out["max"][1] == 9 and all(math.isnan(v) for v in out["nan"])
    assert all(math.isnan(v) for v in percentile_intervals({"m": np.full(5, np.nan)})["m"])


@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c"]])
@pytest.mark.parametrize("unseen", [False, True])
def test_vectorised_classification_equals_scikit_learn_per_resample(classes: list[str], unseen: bool) -> None:
    records = class_records(classes, 20, seed=len(classes), unseen=unseen)
    idx = bootstrap_indices(20, 60, seed=3)
    idx[:5] = idx[:5, :1]                        # one-slide resamples: one class only
    idx[5:10] = np.where(idx[5:10] == 1, 2, idx[5:10])
    fast = classification_resampled(records, classes, idx)
    for b in range(idx.shape[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = classification_metrics([records[i] for i in idx[b]], classes)
        for name, values in fast.items():
            if math.isnan(ref[name]):
                assert math.isnan(values[b]), (name, b)
            else:
                assert values[b] == pytest.approx(ref[name], abs=1e-12), (name, b)


def test_classification_head_reports_cis_around_the_point_estimate() -> None:
    classes = ["a", "b", "c"]
    head = Classification(ClassificationConfig(), in_dim=4, target_state={"classes": classes})
    records = class_records(classes, 30, seed=0)
    for r in records[:20]:                       # make predictions mostly right
        r["pred"] = r["target"]
        r[f"prob_{r['target']}"] += 1.0
    m = head.metrics(records)
    for name in ("balanced_accuracy", "accuracy", "f1_macro", "auc_macro"):
        low, high = m[f"{name}_ci95"]
        assert low <= m[name] <= high and high - low > 0.01
    assert classification_ci([], classes) == {}
