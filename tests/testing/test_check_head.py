"""The head conformance kit: built-in and correct heads pass, broken ones fail the right check."""

import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput
from milkit.components.aggregators.abmil import ABMIL
from milkit.components.heads.classification import Classification
from milkit.config import ComponentConfig
from milkit.head import Head, HeadOutput, Row
from milkit.nn.masking import masked_mean
from milkit.testing import HEAD_CHECKS, CheckFailure, check_head, run_head_checks


class TokenConfig(ComponentConfig):
    time_column: str = Field("time")


class TokenRegression(Head):
    """Regresses ``time`` from the mean of the real tokens (a stand-in for a token-consuming head)."""

    name = "token_regression"
    Config = TokenConfig
    requires_tokens = True
    target_columns = ("time",)

    def __init__(self, config: TokenConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        self.out = nn.Linear(in_dim, 1)

    def pool(self, x: AggregatorOutput) -> Tensor:
        assert x.tokens is not None and x.token_mask is not None
        return masked_mean(x.tokens, x.token_mask)                        # b e

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        return {"time": torch.tensor([float(r[self.config.time_column]) for r in rows])}

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        return HeadOutput({"value": self.out(self.pool(x)).squeeze(-1)})  # b

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        return F.mse_loss(out.values["value"], targets["time"])

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        return [{"slide_id": r["slide_id"], "value": float(v)} for r, v in zip(rows, self.forward(x).values["value"])]

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        return {"n": len(records)}


class IgnoresTokenMask(TokenRegression):
    def pool(self, x: AggregatorOutput) -> Tensor:
        assert x.tokens is not None
        return x.tokens.mean(1)


class ForgetsSlideId(Classification):
    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        return [{k: v for k, v in rec.items() if k != "slide_id"} for rec in super().predict(x, rows)]


class UnserialisableState(Classification):
    @classmethod
    def fit_targets(cls, config: ComponentConfig, train_rows: list[Row]) -> dict[str, Any]:
        return {"classes": {"A", "B", "C"}}


class PerSlideLoss(Classification):
    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(out.values["logits"], targets["label"], reduction="none")


def _failed(report: Any) -> dict[str, str]:
    return {r.check: r.message for r in report.failures}


def test_builtin_classification_passes_every_check() -> None:
    report = check_head(Classification)
    assert [r.check for r in report.results] == list(HEAD_CHECKS)
    assert report.status("token padding invariance") == "skip"  # needs no tokens


def test_renamed_label_columns_get_synthetic_values() -> None:
    assert check_head(Classification, {"label_column": "subtype", "class_weights": "balanced"}).passed


def test_a_token_head_passes_and_one_that_ignores_token_mask_fails_with_the_change() -> None:
    assert check_head(TokenRegression).status("token padding invariance") == "pass"
    failed = _failed(run_head_checks(IgnoresTokenMask))
    assert set(failed) == {"token padding invariance"}
    assert re.fullmatch(
        r"values\['value'\] changed by max \|Δ\| = \S+ \(atol 1e-05\) when 3 padded tokens were appended",
        failed["token padding invariance"],
    )


def test_head_fed_by_a_real_aggregator_is_bound_and_trained_through_it() -> None:
    aggregator = ABMIL(ABMIL.Config(embed_dim=8, attn_dim=4), in_dim=5)
    assert check_head(Classification, aggregator=aggregator).passed
    assert all(p.grad is not None for p in aggregator.parameters())  # the loss reached the aggregator


@pytest.mark.parametrize(
    ("cls", "checks", "fragment"),
    [
        (ForgetsSlideId, {"predict", "metrics"}, "must be a dict with slide_id 'slide_0'"),
        (UnserialisableState, {"fit_targets"}, "fit_targets returned a state that is not JSON-serialisable"),
        (PerSlideLoss, {"loss and gradients"}, "loss must be a scalar tensor, got torch.Size([6])"),
    ],
)
def test_each_broken_head_fails_its_check(cls: type[Head], checks: set[str], fragment: str) -> None:
    report = run_head_checks(cls)
    failed = _failed(report)
    assert set(failed) == checks
    assert all(fragment in failed[c] for c in checks)
    with pytest.raises(CheckFailure, match=re.escape(fragment)):
        report.raise_for_failures()


def test_rows_the_head_rejects_fail_check_rows_with_its_message() -> None:
    rows = [{"slide_id": "s1", "label": ""}, {"slide_id": "s2", "label": "A"}]
    failed = _failed(run_head_checks(Classification, rows=rows))
    assert "check_rows rejected the test rows: [\"column 'label' is empty for slide(s) s1\"]" in failed["check_rows"]
