"""Defaults of the Head interface that core relies on: the strata of ``[cohort] stratify = "auto"``
(and how the runner resolves ``stratify``), and which way a metric is better."""

from types import SimpleNamespace

import pytest

from milkit.components.heads.classification import Classification, ClassificationConfig
from milkit.components.heads.cox import CoxConfig, CoxSurvival
from milkit.head import Head
from milkit.runner import split_strata

ROWS = [{"slide_id": f"s{i}", "label": "ab"[i % 2], "event": i % 3 == 0, "tf": 0.1 * i} for i in range(6)]


def test_default_strata_are_the_stratify_columns_values() -> None:
    assert Classification.strata(ClassificationConfig(), ROWS) == ["a", "b", "a", "b", "a", "b"]
    assert CoxSurvival.strata(CoxConfig(), ROWS) == ["True", "False", "False", "True", "False", "False"]
    assert Head.strata(ClassificationConfig(), ROWS) is None                   # no stratify column: no strata


@pytest.mark.parametrize(("stratify", "expected"), [
    ("auto", ["a", "b", "a", "b", "a", "b"]),
    ("none", None),
    ("tf", [str(0.1 * i) for i in range(6)]),
])
def test_runner_resolves_cohort_stratify(stratify: str, expected: list[str] | None) -> None:
    recipe = SimpleNamespace(cohort=SimpleNamespace(stratify=stratify),
                             head=SimpleNamespace(cls=Classification, config=ClassificationConfig()))
    assert split_strata(recipe, ROWS) == expected  # type: ignore[arg-type]


def test_metric_mode_defaults() -> None:
    assert Classification.metric_mode("balanced_accuracy") == "max"           # its monitor, monitor_mode
    assert Classification.metric_mode("auc_macro") == "max"
    assert Classification.metric_mode("loss") == "min" and Head.metric_mode("val_loss") == "min"
    assert Head.metric_mode("loss") == Head.monitor_mode == "min"
