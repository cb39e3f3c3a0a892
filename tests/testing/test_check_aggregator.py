"""The aggregator conformance kit: a correct component passes, each broken one fails the right check."""

import re

import pytest
import torch
from pydantic import ConfigDict, Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.errors import MilkitError
from milkit.nn.masking import masked_mean, masked_softmax
from milkit.testing import AGGREGATOR_CHECKS, CheckFailure, check_aggregator, run_aggregator_checks


class SmallConfig(ComponentConfig):
    embed_dim: int = Field(8, gt=0)


class Good(Aggregator):
    """Attention pooling that honours the mask (the attention scores reuse the embedding weights)."""

    name = "good"
    Config = SmallConfig

    def __init__(self, config: SmallConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        self.out_dim = config.embed_dim
        self.embed = nn.Linear(in_dim, config.embed_dim)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = torch.relu(self.embed(feats))                                 # b n e
        a = masked_softmax(h.sum(-1), mask)                               # b n
        return AggregatorOutput(torch.einsum("bn,bne->be", a, h), a)


class PadLeaky(Good):
    """Averages over every position, padded ones included."""

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        return AggregatorOutput(torch.relu(self.embed(feats)).mean(1))


class OrderDependent(Good):
    """Weights patches by their position but claims permutation invariance."""

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        pos = torch.arange(1, feats.shape[1] + 1, dtype=feats.dtype)[None, :, None]
        return AggregatorOutput(masked_mean(torch.relu(self.embed(feats)) * pos, mask))


class BatchCoupled(Good):
    """Normalises each embedding with statistics of the whole batch."""

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        e = masked_mean(torch.relu(self.embed(feats)), mask)
        return AggregatorOutput(e - e.mean(0, keepdim=True))


class UnusedParameter(Good):
    def __init__(self, config: SmallConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        self.forgotten = nn.Linear(3, 3)


class WrongWidth(Good):
    def __init__(self, config: SmallConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        self.out_dim = config.embed_dim + 1


class LooseConfig(ComponentConfig):
    model_config = ConfigDict(extra="allow", frozen=True)
    embed_dim: int = 8


class AcceptsAnyKey(Good):
    Config = LooseConfig


class RandomBuffer(Good):
    """Uses a random non-persistent buffer: a reloaded copy computes something else."""

    def __init__(self, config: SmallConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        self.register_buffer("noise", torch.randn(config.embed_dim), persistent=False)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        out = super().forward(feats, mask, coords)
        return AggregatorOutput(out.embedding + self.noise, out.attention)


class NaNUnderBF16(Good):
    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        out = super().forward(feats, mask, coords)
        if out.embedding.dtype == torch.bfloat16:
            return AggregatorOutput(out.embedding * float("nan"), out.attention)
        return out


class NeedsPath(ComponentConfig):
    path: str
    embed_dim: int = 8


class RequiresConfig(Good):
    Config = NeedsPath


def test_a_correct_aggregator_passes_every_check() -> None:
    report = check_aggregator(Good)
    assert [r.check for r in report.results] == list(AGGREGATOR_CHECKS)
    assert {r.status for r in report.results} == {"pass"} and report.passed


def test_padding_leak_fails_with_the_check_name_and_the_size_of_the_change() -> None:
    with pytest.raises(CheckFailure) as info:
        check_aggregator(PadLeaky)
    message = str(info.value)
    assert message.startswith("aggregator 'good' (PadLeaky) failed ")
    match = re.search(
        r"padding invariance: embedding changed by max \|Δ\| = ([0-9.e+-]+) \(atol 1e-05\) "
        r"when 3 padded patches were appended",
        message,
    )
    assert match and float(match.group(1)) > 1e-3


@pytest.mark.parametrize(
    ("cls", "checks", "message"),
    [
        (OrderDependent, {"permutation invariance"}, "embedding changed by max |Δ| = {} (atol 1e-05) when the patches of each bag were permuted"),
        (BatchCoupled, {"batch independence"}, "embedding changed by max |Δ| = {} (atol 1e-05) for slide 0 when slide 1 was replaced"),
        (UnusedParameter, {"gradients"}, "no gradient reached 2 trainable parameter(s): forgotten.weight, forgotten.bias {}"),
        (WrongWidth, {"output shapes", "bag sizes"}, "embedding has shape (2, 8), expected (2, 9) for bags of lengths [5, 3]"),
        (AcceptsAnyKey, {"config"}, "LooseConfig accepted the unknown key 'milkit_unknown_key'; subclass {}"),
        (RandomBuffer, {"state-dict round trip"}, "embedding changed by max |Δ| = {} after a safetensors save_model/load_model round trip"),
        (NaNUnderBF16, {"bf16 autocast"}, "embedding has 16 NaN/Inf value(s) under torch.autocast('cpu', dtype=torch.bfloat16)"),
    ],
)
def test_each_broken_aggregator_fails_its_check(cls: type[Aggregator], checks: set[str], message: str) -> None:
    report = run_aggregator_checks(cls)
    failed = {r.check: r.message for r in report.failures}
    assert set(failed) == checks
    first = next(c for c in AGGREGATOR_CHECKS if c in checks)
    pattern = re.escape(message).replace(re.escape("{}"), ".+")  # {} stands for a measured value
    assert re.fullmatch(pattern, failed[first]), failed[first]
    with pytest.raises(CheckFailure, match=re.escape(f"{first}: ") + pattern):
        report.raise_for_failures()


def test_permutation_check_is_skipped_for_order_aware_components() -> None:
    class PositionAware(OrderDependent):
        permutation_invariant = False

    report = check_aggregator(PositionAware)
    assert report.status("permutation invariance") == "skip"


def test_required_config_fields_are_reported_not_guessed() -> None:
    report = run_aggregator_checks(RequiresConfig)
    assert report.status("config") == "skip" and report.status("gradients") == "skip"
    with pytest.raises(CheckFailure, match=r"required fields without defaults \(path\); pass config=\{\.\.\.\}"):
        report.raise_for_failures()
    assert check_aggregator(RequiresConfig, {"path": "x"}).passed


def test_a_crashing_forward_is_a_failed_check_not_a_crash() -> None:
    class Crashes(Good):
        def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
            raise RuntimeError("boom")

    report = run_aggregator_checks(Crashes)
    assert report.status("build") == "pass"
    assert report.failures[0].message == "raised RuntimeError: boom"


def test_check_failure_is_an_assertion_and_a_milkit_error() -> None:
    assert issubclass(CheckFailure, AssertionError) and issubclass(CheckFailure, MilkitError)


def test_the_kit_leaves_the_global_rng_alone_and_is_deterministic() -> None:
    state = torch.get_rng_state()
    first = run_aggregator_checks(PadLeaky).failures[0].message
    assert torch.equal(torch.get_rng_state(), state)
    assert run_aggregator_checks(PadLeaky).failures[0].message == first


def test_named_checks_can_be_skipped_but_unknown_names_are_refused() -> None:
    report = check_aggregator(NaNUnderBF16, skip={"bf16 autocast"})
    assert report.status("bf16 autocast") == "skip" and report.passed
    with pytest.raises(ValueError, match=r"unknown check\(s\) \['bf16'\]; valid checks: config, build, output shapes"):
        run_aggregator_checks(Good, skip={"bf16"})
