"""WiKG aggregator: parity with the reference code, masks, small bags, readouts, training."""

import pytest
import torch

from milkit.components.aggregators.wikg import WiKG, WiKGConfig
from milkit.components.heads.classification import Classification, ClassificationConfig
from milkit.testing import check_aggregator
import _reference_wikg as ref
from _bags import junk_padded

SMALL = {"dim_hidden": 32}
IN_DIM = 24


def build(**cfg) -> WiKG:
    torch.manual_seed(0)
    return WiKG(WiKGConfig(**{**SMALL, **cfg}), in_dim=IN_DIM).eval()


def padded_batch(lengths: list[int], pad_to: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, IN_DIM, pad_to)


def reference_of(model: WiKG, head: Classification, topk: int | None = None) -> ref.WiKG:
    """The reference WiKG holding the weights of ``model`` and of the head's linear layer (its ``fc``)."""
    cfg = model.config
    theirs = ref.WiKG(dim_in=IN_DIM, dim_hidden=cfg.dim_hidden, topk=topk or cfg.topk, n_classes=2,
                      agg_type=cfg.agg_type, dropout=cfg.dropout, pool=cfg.pool)
    ours = {k.replace("fc1.", "_fc1.").replace("att_net.", "readout.gate_nn."): v
            for k, v in model.state_dict().items()}
    ours.update({f"fc.{k}": v for k, v in head.classifier[1].state_dict().items()})
    missing, unexpected = theirs.load_state_dict(ours, strict=False)
    assert unexpected == [] and sorted(missing) == sorted(f"gate_{g}.{p}" for g in "UVW" for p in ("weight", "bias"))
    return theirs.eval()


def head_for(model: WiKG) -> Classification:
    torch.manual_seed(1)
    return Classification(ClassificationConfig(n_boot=0), in_dim=model.out_dim,
                          target_state={"classes": ["a", "b"]}).eval()


def test_conformance_kit_and_registration(registries) -> None:
    for agg_type in ("bi-interaction", "gcn", "sage"):
        check_aggregator(WiKG, {**SMALL, "agg_type": agg_type})
    for pool in ("mean", "max"):
        check_aggregator(WiKG, {**SMALL, "pool": pool, "topk": 2})
    assert registries.aggregators.get("wikg") is WiKG


@pytest.mark.parametrize(("agg_type", "pool"), [("bi-interaction", "attn"), ("gcn", "mean"), ("sage", "max"),
                                                ("bi-interaction", "mean")])
@pytest.mark.parametrize("n", [6, 11, 40, 150])
def test_parity_with_the_reference(agg_type: str, pool: str, n: int) -> None:
    """Same weights: logits (through the head's linear layer) and the readout's attention match upstream."""
    model = build(agg_type=agg_type, pool=pool)
    head = head_for(model)
    theirs = reference_of(model, head)
    feats = torch.randn(1, n, IN_DIM, generator=torch.Generator().manual_seed(n))
    seen = {}
    if pool == "attn":
        theirs.readout.register_forward_hook(lambda m, args, out: seen.update(h=args[0]))
    with torch.no_grad():
        out = model(feats, torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, 2))
        want = theirs(feats)
        torch.testing.assert_close(head.classifier(out.embedding), want, atol=1e-5, rtol=0)
        if pool == "attn":
            gate = ref.pyg_softmax(theirs.readout.gate_nn(seen["h"])).squeeze(-1)   # n
            torch.testing.assert_close(out.attention[0], gate, atol=1e-6, rtol=0)
        else:
            assert out.attention is None


@pytest.mark.parametrize("n", [1, 3, 5])
def test_bags_smaller_than_topk_link_to_every_patch(n: int) -> None:
    """With n < topk real patches every patch links to all n (the reference needs n >= topk: run it with topk = n)."""
    model = build()
    head = head_for(model)
    feats, mask, coords = padded_batch([n], pad_to=n)
    with torch.no_grad():
        got = head.classifier(model(feats, mask, coords).embedding)
        torch.testing.assert_close(got, reference_of(model, head, topk=n)(feats), atol=1e-5, rtol=0)


def test_padding_never_changes_outputs() -> None:
    """Bags padded together (one shorter than topk, one empty) == each alone; padding is never a neighbour."""
    for cfg in ({}, {"agg_type": "sage", "pool": "max"}, {"agg_type": "gcn", "pool": "mean"}):
        model = build(**cfg)
        lengths = [37, 4, 9, 0]
        feats, mask, coords = padded_batch(lengths, pad_to=50)
        with torch.no_grad():
            both = model(feats, mask, coords)
            for i, n in enumerate(lengths):
                m = max(n, 1)                                                  # the empty bag: one padded patch
                alone = model(feats[i:i + 1, :m], mask[i:i + 1, :m], coords[i:i + 1, :m])
                torch.testing.assert_close(both.embedding[i], alone.embedding[0], atol=1e-5, rtol=0)
                if both.attention is not None:
                    torch.testing.assert_close(both.attention[i, :m], alone.attention[0], atol=1e-6, rtol=0)
        assert torch.isfinite(both.embedding).all()
        if both.attention is not None:
            assert torch.all(both.attention[~mask] == 0)
            torch.testing.assert_close(both.attention.sum(1), torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_knowledge_aware_weight_is_the_references_einsum() -> None:
    """einsum('ijkl,ijkm->ijk') sums l and m separately: (sum of the tail) x (sum of the gate), not a dot product."""
    nb, gate = torch.randn(2, 5, 3, 7), torch.randn(2, 5, 3, 7)
    torch.testing.assert_close(torch.einsum("ijkl,ijkm->ijk", nb, gate), nb.sum(-1) * gate.sum(-1))


def test_every_parameter_gets_a_gradient_and_training_lowers_the_loss() -> None:
    model = build(dropout=0.1).train()
    head = head_for(model).train()
    feats, mask, coords = padded_batch([12, 7, 20], pad_to=20)
    labels = torch.tensor([0, 1, 1])
    feats = feats + labels[:, None, None] * mask[..., None]                                 # learnable signal
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head.classifier(model(feats, mask, coords).embedding), labels)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert missing == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bf16_autocast() -> None:
    model = build()
    feats, mask, coords = padded_batch([30, 0, 3], pad_to=30)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(feats, mask, coords)
    assert torch.isfinite(out.embedding.float()).all() and torch.isfinite(out.attention.float()).all()


def test_default_architecture_matches_the_reference() -> None:
    """dim_hidden 512, topk 6, bi-interaction, dropout 0.3, attn readout; the reference's parameters less its
    unused gate_U/V/W and its fc (the head)."""
    model = WiKG(WiKGConfig(), in_dim=384)
    cfg = model.config
    assert (cfg.dim_hidden, cfg.topk, cfg.agg_type, cfg.dropout, cfg.pool) == (512, 6, "bi-interaction", 0.3, "attn")
    theirs = ref.WiKG(dim_in=384)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    unused = count(theirs.gate_U) + count(theirs.gate_V) + count(theirs.gate_W) + count(theirs.fc)
    assert count(model) == count(theirs) - unused == 1_380_353
