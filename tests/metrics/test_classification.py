"""Classification metrics on splits that hold only some of the classes."""

import math

import pytest
from sklearn.metrics import roc_auc_score

from milkit.metrics.classification import classification_metrics


def _rec(target: str, probs: dict[str, float]) -> dict:
    return {"target": target, "pred": max(probs, key=probs.get), **{f"prob_{c}": p for c, p in probs.items()}}


def test_two_of_three_classes_present_gives_their_binary_auc():
    records = [_rec("a", {"a": 0.6, "b": 0.3, "c": 0.1}), _rec("b", {"a": 0.2, "b": 0.5, "c": 0.3}),
               _rec("a", {"a": 0.3, "b": 0.4, "c": 0.3}), _rec("b", {"a": 0.1, "b": 0.1, "c": 0.8})]
    auc = classification_metrics(records, ["a", "b", "c"])["auc_macro"]
    b_given_ab = [r["prob_b"] / (r["prob_a"] + r["prob_b"]) for r in records]
    assert auc == pytest.approx(roc_auc_score([r["target"] == "b" for r in records], b_given_ab))


def test_one_class_present_is_nan_and_binary_is_unchanged():
    one = [_rec("a", {"a": 0.6, "b": 0.4}), _rec("a", {"a": 0.3, "b": 0.7})]
    assert math.isnan(classification_metrics(one, ["a", "b"])["auc_macro"])
    two = one + [_rec("b", {"a": 0.2, "b": 0.8})]
    assert classification_metrics(two, ["a", "b"])["auc_macro"] == pytest.approx(
        roc_auc_score([False, False, True], [0.4, 0.7, 0.8]))
