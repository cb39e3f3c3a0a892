"""The extractor conformance kit: a correct encoder passes, broken ones fail the right check."""

import pytest
import torch
from pydantic import Field
from torch import Tensor, nn

from milkit.config import ComponentConfig
from milkit.extractor import Extractor
from milkit.testing import EXTRACTOR_CHECKS, CheckFailure, check_extractor, run_extractor_checks


class TinyConfig(ComponentConfig):
    feature_dim: int = Field(6, gt=0)


class Tiny(Extractor):
    name = "tiny"
    Config = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        self.feature_dim, self.tile_size_px = config.feature_dim, 32
        self.stem = nn.Conv2d(3, config.feature_dim, 8, stride=8)

    def forward(self, tiles: Tensor) -> Tensor:
        x = (tiles - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        return self.stem(x).mean((2, 3))                                  # b d


class BatchNormalised(Tiny):
    def forward(self, tiles: Tensor) -> Tensor:
        f = super().forward(tiles)
        return f - f.mean(0, keepdim=True)


class WrongDim(Tiny):
    def forward(self, tiles: Tensor) -> Tensor:
        return super().forward(tiles)[:, :-1]


class NeedsWeights(ComponentConfig):
    weights: str


class Weighted(Tiny):
    Config = NeedsWeights

    def __init__(self, config: NeedsWeights) -> None:
        super().__init__(TinyConfig())
        self.config = config


def test_a_correct_extractor_passes_every_check() -> None:
    report = check_extractor(Tiny)
    assert [r.check for r in report.results] == list(EXTRACTOR_CHECKS) and report.passed


def test_batch_coupled_features_fail_batch_independence_with_the_change() -> None:
    with pytest.raises(CheckFailure, match=r"batch independence: tile 0's features changed by max \|Δ\| = \S+ \(atol 0.0001\) between a batch of 2 and a batch of 1"):
        check_extractor(BatchNormalised)


def test_wrong_feature_width_fails_output_shapes() -> None:
    failed = {r.check: r.message for r in run_extractor_checks(WrongDim).failures}
    assert failed == {"output shapes": "features have shape (2, 5), expected (2, 6)"}


def test_an_extractor_that_needs_weights_is_not_run_without_a_config() -> None:
    report = run_extractor_checks(Weighted)
    assert report.status("config") == "skip" and not report.failures and not report.passed
    assert "required fields without defaults (weights)" in report.not_run
    assert check_extractor(Weighted, {"weights": "w.safetensors"}).passed
