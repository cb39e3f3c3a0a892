"""The ``histgen`` aggregator: padding invariance, batching, edge cases, conformance."""

import pytest
import torch
from _histgen_helpers import IN_DIM, SMALL_AGG, grid_coords, pad, small_model
from pydantic import ValidationError

from milkit.histgen.aggregator import HistGen, HistGenConfig
from milkit.testing.aggregator import check_aggregator


def _encode(model, bags):
    with torch.no_grad():
        return model.encode(bags)


def _same(a, b, ma, mb, atol=1e-5):
    assert torch.allclose(a.embedding, b.embedding, atol=atol)
    r = b.tokens.shape[1]
    assert torch.equal(a.token_mask[:, :r], b.token_mask) and not a.token_mask[:, r:].any()
    assert torch.allclose(a.tokens[:, :r], b.tokens, atol=atol)
    assert torch.allclose(a.attention[ma], b.attention[mb], atol=atol)


@pytest.mark.parametrize("variant,order", [("fixed", "scan"), ("fixed", "spatial"), ("faithful", "scan")])
def test_padding_changes_nothing(variant: str, order: str) -> None:
    model = small_model(variant, region_order=order)
    torch.manual_seed(1)
    bags = [torch.randn(n, IN_DIM) for n in (13, 4)]
    coords = [grid_coords(13), grid_coords(4)]
    plain, padded = pad(bags, coords), pad(bags, coords, extra=9, fill=float("nan"))
    a, b = _encode(model, padded), _encode(model, plain)
    _same(a, b, padded.mask, plain.mask)
    assert (a.attention[~padded.mask] == 0).all()
    ids = torch.tensor([[0, 3, 4, 5, 0], [0, 6, 7, 0, 0]])
    la = model.head(a, {"ids": ids}).values["logprobs"]
    lb = model.head(b, {"ids": ids}).values["logprobs"]
    assert torch.allclose(la, lb, atol=1e-5)


@pytest.mark.parametrize("variant", ["fixed", "faithful"])
def test_batch_equals_one_slide_at_a_time(variant: str) -> None:
    model = small_model(variant)
    torch.manual_seed(2)
    bags = [torch.randn(n, IN_DIM) for n in (1, 13, 31)]
    batch = _encode(model, pad(bags))
    for i, b in enumerate(bags):
        one = _encode(model, pad([b]))
        r = one.tokens.shape[1]
        assert torch.allclose(batch.tokens[i, :r], one.tokens[0], atol=1e-5)
        assert batch.token_mask[i].sum() == r == -(-len(b) // (SMALL_AGG["region_size"] - 1))
        assert torch.allclose(batch.embedding[i], one.embedding[0], atol=1e-5)
        assert torch.allclose(batch.attention[i, : len(b)], one.attention[0], atol=1e-6)


@pytest.mark.parametrize("variant", ["fixed", "faithful"])
def test_single_patch_and_tiny_bags_stay_finite_in_training(variant: str) -> None:
    model = small_model(variant).train()
    bags = pad([torch.randn(1, IN_DIM), torch.randn(3, IN_DIM)])         # fewer than prototype_num (8)
    out = model.encode(bags)
    assert out.tokens.shape[1] == 1 and torch.isfinite(out.tokens).all() and torch.isfinite(out.embedding).all()
    loss = model.head.loss(model.head(out, {"ids": torch.tensor([[0, 4, 0], [0, 5, 0]])}),
                           {"ids": torch.tensor([[0, 4, 0], [0, 5, 0]]), "lengths": torch.tensor([3, 3])})
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_attention_is_a_patch_weighting() -> None:
    model = small_model("fixed")
    bags = pad([torch.randn(17, IN_DIM), torch.randn(6, IN_DIM)])
    att = _encode(model, bags).attention
    assert (att >= 0).all() and (att[~bags.mask] == 0).all()
    assert ((att.sum(1) > 0) & (att.sum(1) < 1)).all()                # the rest sits on the region tokens


def test_spatial_order_makes_the_slide_permutation_invariant() -> None:
    model = small_model("fixed", region_order="spatial")
    torch.manual_seed(3)
    feats, coords = torch.randn(40, IN_DIM), grid_coords(40, cols=8)
    perm = torch.randperm(40)
    a = _encode(model, pad([feats], [coords]))
    b = _encode(model, pad([feats[perm]], [coords[perm]]))
    assert torch.allclose(a.tokens, b.tokens, atol=1e-5) and torch.allclose(a.embedding, b.embedding, atol=1e-5)
    assert torch.allclose(a.attention[0, perm], b.attention[0], atol=1e-6)


def test_only_dead_upstream_modules_lack_gradients() -> None:
    for variant in ("fixed", "faithful"):
        model = small_model(variant).train()
        out = model.encode(pad([torch.randn(20, IN_DIM), torch.randn(7, IN_DIM)]))
        ids = torch.tensor([[0, 3, 4, 0], [0, 5, 0, 0]])
        loss = model.head.loss(model.head(out, {"ids": ids}), {"ids": ids, "lengths": torch.tensor([4, 3])})
        (loss + out.embedding.sum()).backward()
        dead = sorted(n for n, p in model.named_parameters() if p.grad is None)
        assert all("unused" in n for n in dead)
        assert bool(dead) == (variant == "faithful")


def test_config_rejects_impossible_combinations() -> None:
    with pytest.raises(ValidationError, match="region_order"):
        HistGenConfig(variant="faithful", region_order="spatial")
    with pytest.raises(ValidationError, match="topk"):
        HistGenConfig(topk=4096)
    with pytest.raises(ValidationError, match="cmm_dim"):
        HistGenConfig(cmm_dim=256)


@pytest.mark.parametrize("variant", ["fixed", "faithful"])
def test_aggregator_conformance(variant: str) -> None:
    check_aggregator(HistGen, {"variant": variant, **{**SMALL_AGG, "region_size": 4}})
