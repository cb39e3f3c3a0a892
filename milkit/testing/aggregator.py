"""Conformance checks every :class:`milkit.Aggregator` must pass (shared by milkit's and plugins' tests)."""

import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import Tensor

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.testing.outputs import check_output, compare, first_slide
from milkit.testing.report import (
    CheckError,
    CheckReport,
    CheckSkip,
    assert_close,
    assert_finite,
    
    require,
    skip_set,
)
from milkit.testing.synthetic import Bags, make_bags

AGGREGATOR_CHECKS = (
    "config",
    "build",
    "output shapes",
    "padding invariance",
    "permutation invariance",
    "bag sizes",
    "batch independence",
    "gradients",
    "bf16 autocast",
    "state-dict round trip",
)


def run_aggregator_checks(
    cls: type[Aggregator],
    config: ComponentConfig | dict[str, Any] | None = None,
    *,
    in_dim: int = 16,
    atol: float = 1e-5,
    seed: int = 0,
    skip: Collection[str] = (),
) -> CheckReport:
    """Run every aggregator check and return the per-check results; never raises for a failed check.

    Args:
        cls: the aggregator class.
        config: its config (a Config instance or a dict); default ``cls.Config()``.
        in_dim: feature width D of the synthetic bags.
        atol: tolerance of every equality check (outputs are compared in eval mode).
        seed: seed of the synthetic inputs and of the component's initialisation.
        skip: names of checks not to run (reported as skipped), e.g. ``{"bf16 autocast"}``.
    """
    label = f"aggregator '{getattr(cls, 'name', '?')}' ({cls.__qualname__})"
    report = CheckReport(label, skip=skip_set(skip, AGGREGATOR_CHECKS))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        cfg = report.config(cls, config, AGGREGATOR_CHECKS)
        if cfg is None:
            return report

        def build(s: int) -> Aggregator:
            torch.manual_seed(s)
            return cls(cfg, in_dim=in_dim)

        model = report.run("build", lambda: _build(cls, build(seed)))
        if model is None:
            report.skip_rest(list(AGGREGATOR_CHECKS[2:]), "the component could not be built")
            return report
        gen = torch.Generator().manual_seed(seed)
        case = _Case(model, in_dim, atol, gen, lambda: build(seed + 1))
        for name, fn in _CHECKS.items():
            report.run(name, lambda fn=fn: fn(case))
    return report


def check_aggregator(
    cls: type[Aggregator],
    config: ComponentConfig | dict[str, Any] | None = None,
    *,
    in_dim: int = 16,
    atol: float = 1e-5,
    seed: int = 0,
    skip: Collection[str] = (),
) -> CheckReport:
    """Like :func:`run_aggregator_checks`, but raise :class:`CheckFailure` if any check failed.

    Example:
        >>> from milkit.testing import check_aggregator
        >>> check_aggregator(DSMIL, {"embed_dim": 32})
    """
    return run_aggregator_checks(cls, config, in_dim=in_dim, atol=atol, seed=seed, skip=skip).raise_for_failures()


class _Case:
    def __init__(
        self, model: Aggregator, in_dim: int, atol: float, gen: torch.Generator, fresh: Callable[[], Aggregator]
    ) -> None:
        self.model, self.in_dim, self.atol, self.gen, self.fresh = model, in_dim, atol, gen, fresh

    def bags(self, lengths: list[int], pad_to: int | None = None) -> Bags:
        return make_bags(lengths, self.in_dim, self.gen, pad_to=pad_to)

    def __call__(self, bags: Bags, model: Aggregator | None = None) -> AggregatorOutput:
        model = model or self.model
        model.eval()
        with torch.no_grad():
            return model(bags.feats, bags.mask, bags.coords)



def _build(cls: type, model: Any) -> Aggregator:
    require(isinstance(model, Aggregator), f"{cls.__qualname__} is not a subclass of milkit.Aggregator")
    out_dim = getattr(model, "out_dim", None)
    require(isinstance(out_dim, int) and out_dim > 0, f"out_dim must be a positive int, got {out_dim!r}")
    return model


def _shapes(case: _Case) -> None:
    bags = case.bags([5, 3])
    out = case(bags)
    check_output(out, bags, case.model, "for bags of lengths [5, 3]")
    declared = type(case.model).returns_attention
    if declared is not None:
        require((out.attention is not None) == declared, f"returns_attention = {declared}, but forward returned "
                f"{'no ' if out.attention is None else ''}attention")


def _padding(case: _Case) -> None:
    bags = case.bags([5, 3])
    padded = bags.pad(3, case.gen)
    ctx = "when 3 padded patches were appended"
    a, b = case(bags), case(padded)
    compare(a, b, bags.mask, padded.mask, case.atol, ctx)
    if b.attention is not None:
        leak = b.attention[~padded.mask].abs().max().item()
        require(leak <= case.atol, f"attention on padded patches is {leak:.3g}, expected 0")


def _permutation(case: _Case) -> None:
    if not type(case.model).permutation_invariant:
        raise CheckSkip(f"{type(case.model).__name__}.permutation_invariant is False")
    bags = case.bags([6, 4])
    perm = torch.arange(6).repeat(2, 1)                                            # b n
    for i, length in enumerate(bags.lengths):
        perm[i, :length] = torch.randperm(length, generator=case.gen)
    idx = perm[..., None]
    feats = bags.feats.gather(1, idx.expand_as(bags.feats))                       # b n d, shuffled
    shuffled = Bags(feats, bags.mask, bags.coords.gather(1, idx.expand(-1, -1, 2)))
    a, b = case(bags), case(shuffled)
    ctx = "when the patches of each bag were permuted"
    assert_close(b.embedding, a.embedding, "embedding", case.atol, ctx)
    if a.attention is not None and b.attention is not None:
        assert_close(b.attention, a.attention.gather(1, perm), "attention (permuted back)", case.atol, ctx)


def _bag_sizes(case: _Case) -> None:
    for lengths in ([1], [7], [1, 9], [2, 1, 4], [33]):
        bags = case.bags(lengths)
        check_output(case(bags), bags, case.model, f"for bags of lengths {lengths}")


def _batch_independence(case: _Case) -> None:
    bags = case.bags([4, 6])
    other = case.bags([4, 6])
    swapped = Bags(
        torch.cat([bags.feats[:1], other.feats[1:]]), bags.mask, torch.cat([bags.coords[:1], other.coords[1:]])
    )
    a, b, alone = case(bags), case(swapped), case(bags.select([0]))
    m = bags.mask[:1]
    compare(first_slide(a), first_slide(b), m, m, case.atol, "for slide 0 when slide 1 was replaced")
    compare(first_slide(a), alone, m, m, case.atol, "for slide 0 between a batch of 2 and a batch of 1")


def _gradients(case: _Case) -> None:
    model = case.model
    model.train()
    model.zero_grad(set_to_none=True)
    bags = case.bags([5, 3])
    out = model(bags.feats, bags.mask, bags.coords)
    total = _weighted_sum(out.embedding, case.gen)
    if out.attention is not None:
        total = total + _weighted_sum(out.attention * bags.mask, case.gen)
    if out.tokens is not None and out.token_mask is not None:
        total = total + _weighted_sum(out.tokens * out.token_mask[..., None], case.gen)
    for term in model.auxiliary_losses(out, aux_targets(len(bags.feats))).values():  # instance classifiers
        total = total + term.float()
    total.backward()
    model.eval()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    require(not missing, f"no gradient reached {len(missing)} trainable parameter(s): {', '.join(missing[:8])} "
            "(unused in forward, or cut by detach/argmax/no_grad; set requires_grad=False if frozen on purpose)")
    bad = [n for n, p in params if p.grad is not None and not torch.isfinite(p.grad).all()]
    require(not bad, f"non-finite gradients in: {', '.join(bad[:8])}")


def aux_targets(batch: int) -> dict[str, Tensor]:
    """The targets the gradients check passes to ``auxiliary_losses``: class 0 for every bag, as the
    classification head's ``collate_targets`` would give (instance losses of CLAM, DSMIL, DTFD read it)."""
    return {"label": torch.zeros(batch, dtype=torch.long)}


def _weighted_sum(t: Tensor, gen: torch.Generator) -> Tensor:
    return (t.float() * torch.randn(t.shape, generator=gen)).sum()


def _bf16(case: _Case) -> None:
    bags = case.bags([5, 3])
    case.model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = case.model(bags.feats, bags.mask, bags.coords)
    ctx = "under torch.autocast('cpu', dtype=torch.bfloat16)"
    assert_finite(out.embedding, "embedding", ctx)
    if out.attention is not None:
        assert_finite(out.attention[bags.mask], "attention", ctx)
    if out.tokens is not None and out.token_mask is not None:
        assert_finite(out.tokens[out.token_mask], "tokens", ctx)


def _state_dict(case: _Case) -> None:
    bags = case.bags([5, 3])
    before = case(bags)
    fresh = case.fresh()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_model(case.model, str(path))
        missing, unexpected = load_model(fresh, str(path))
    if missing or unexpected:
        raise CheckError(f"load_model reported missing keys {missing} and unexpected keys {unexpected}")
    after = case(bags, fresh)
    compare(before, after, bags.mask, bags.mask, case.atol, "after a safetensors save_model/load_model round trip")


_CHECKS: dict[str, Callable[[_Case], None]] = {
    "output shapes": _shapes,
    "padding invariance": _padding,
    "permutation invariance": _permutation,
    "bag sizes": _bag_sizes,
    "batch independence": _batch_independence,
    "gradients": _gradients,
    "bf16 autocast": _bf16,
    "state-dict round trip": _state_dict,
}
