"""DTFD-MIL aggregator: parity with the reference code, masks, pseudo-bags, the tier-1 loss, training."""


import pytest
import torch
import torch.nn.functional as F

from milkit.components.aggregators.dtfd import DTFD, DTFDConfig
from milkit.components.heads.classification import Classification, ClassificationConfig
from milkit.errors import MilkitError
from milkit.testing import check_aggregator
import _reference_dtfd as ref
from _bags import junk_padded

SMALL = {"embed_dim": 32, "attn_dim": 16, "n_classes": 3}
IN_DIM = 24


def build(**cfg) -> DTFD:
    torch.manual_seed(0)
    return DTFD(DTFDConfig(**{**SMALL, **cfg}), in_dim=IN_DIM).eval()


def padded_batch(lengths: list[int], pad_to: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, IN_DIM, pad_to)


def reference_of(model: DTFD, head: Classification) -> tuple:
    """The reference's four modules, holding the weights of ``model`` and of the head's linear layer."""
    cfg = model.config
    dim_red = ref.DimReduction(IN_DIM, cfg.embed_dim, numLayer_Res=cfg.num_res_blocks)
    attention = ref.Attention_Gated(cfg.embed_dim, cfg.attn_dim)
    classifier = ref.Classifier_1fc(cfg.embed_dim, cfg.n_classes, cfg.dropout)
    att_cls = ref.Attention_with_Classifier(L=cfg.embed_dim, D=cfg.attn_dim, num_cls=cfg.n_classes)
    with torch.no_grad():
        dim_red.fc1.weight.copy_(model.reduce[0].weight)
        for i, block in enumerate(dim_red.resBlocks):
            block.block[0].weight.copy_(model.reduce[2 + i][0].weight)
            block.block[2].weight.copy_(model.reduce[2 + i][2].weight)
        for theirs, ours in ((attention, model.attention1), (att_cls.attention, model.attention2)):
            theirs.attention_V[0].load_state_dict(ours.v.state_dict())
            theirs.attention_U[0].load_state_dict(ours.u.state_dict())
            theirs.attention_weights.load_state_dict(ours.w.state_dict())
        classifier.fc.load_state_dict(model.classifier1.state_dict())
        att_cls.classifier.fc.load_state_dict(head.classifier[1].state_dict())
    return dim_red, attention, classifier, att_cls.eval()


def head_for(model: DTFD) -> Classification:
    classes = [f"c{i}" for i in range(model.config.n_classes)]
    head = Classification(ClassificationConfig(n_boot=0), in_dim=model.out_dim, target_state={"classes": classes})
    return head.eval()


def test_conformance_kit_and_registration(registries) -> None:
    # the kit's "gradients" backpropagates the outputs only, not the tier-1 loss that trains classifier1
    # (test_every_parameter_is_trained_by_head_plus_tier1_loss); without classifier1 it runs in full
    for distill in ("AFS", "MaxMinS", "MaxS"):
        check_aggregator(DTFD, {**SMALL, "distill": distill, "total_instance": 8}, skip={"gradients"})
    check_aggregator(DTFD, {**SMALL, "tier1_weight": 0.0})
    assert registries.aggregators.get("dtfd") is DTFD
    assert DTFD.permutation_invariant is False


@pytest.mark.parametrize(("distill", "total_instance", "res"),
                         [("AFS", 4, 0), ("MaxMinS", 4, 0), ("MaxMinS", 8, 1), ("MaxS", 8, 0)])
@pytest.mark.parametrize("n", [4, 9, 37, 150])
@pytest.mark.parametrize("split", ["eval", "random"])
def test_parity_with_the_reference(distill: str, total_instance: int, res: int, n: int, split: str) -> None:
    """Same weights, same pseudo-bags: tier-1 logits, distilled features and slide logits match the reference."""
    model = build(distill=distill, total_instance=total_instance, num_res_blocks=res)
    head = head_for(model)
    feats = torch.randn(n, IN_DIM, generator=torch.Generator().manual_seed(n))
    if split == "eval":
        group = model.pseudo_bags(n)                                               # patch i -> i mod 4
        assert group.tolist() == [i % 4 for i in range(n)]
    else:
        torch.manual_seed(n)
        group = model.train().pseudo_bags(n)
        model.eval()
    chunks = [torch.nonzero(group == g).squeeze(1).tolist() for g in range(4)]
    label = torch.tensor([n % 3])
    with torch.no_grad():
        ours = model._one_bag(feats, group)
        sub_preds, pseudo_feat, slide_pred, loss0, _ = ref.dtfd_slide(
            feats, label, chunks, *reference_of(model, head), distill=distill, total_instance=total_instance)
        slide_logits = head.classifier(ours["embedding"][None])
        if split == "eval":  # the full forward draws the same split
            out = model(feats[None], torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, 2))
            torch.testing.assert_close(out.embedding[0], ours["embedding"], atol=1e-6, rtol=0)
            tier1 = model.auxiliary_losses(out, {"label": label})["tier1"]
            torch.testing.assert_close(tier1, loss0, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["tier1_logits"], sub_preds, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["distilled"], pseudo_feat, atol=1e-5, rtol=0)
    torch.testing.assert_close(slide_logits, slide_pred, atol=1e-5, rtol=0)


def test_padding_changes_nothing_in_eval() -> None:
    for distill in ("AFS", "MaxMinS"):
        model = build(distill=distill, total_instance=8)
        lengths = [37, 5, 2, 0]
        feats, mask, coords = padded_batch(lengths, pad_to=50)
        with torch.no_grad():
            both = model(feats, mask, coords)
            for i, n in enumerate(lengths):
                alone = model(feats[i:i + 1, :n], mask[i:i + 1, :n], coords[i:i + 1, :n])
                torch.testing.assert_close(both.embedding[i], alone.embedding[0], atol=1e-6, rtol=0)
                torch.testing.assert_close(both.attention[i, :n], alone.attention[0], atol=1e-7, rtol=0)
                torch.testing.assert_close(both.aux["tier1_logits"][i], alone.aux["tier1_logits"][0], atol=1e-6, rtol=0)
        assert torch.all(both.attention[~mask] == 0)
        torch.testing.assert_close(both.attention.sum(1), torch.tensor([1.0, 1.0, 1.0, 0.0]))
        assert both.aux["tier1_mask"].sum(1).tolist() == [4, 4, 2, 0]
        assert both.embedding[3].abs().sum() == 0                                   # empty bag: zeros


def test_bags_smaller_than_num_groups() -> None:
    """n < num_groups real patches: n pseudo-bags of one patch each; no empty pseudo-bag."""
    model = build(distill="MaxMinS", total_instance=8)
    for n in (1, 2, 3):
        feats, mask, coords = padded_batch([n], pad_to=6)
        with torch.no_grad():
            out = model(feats, mask, coords)
        assert out.aux["tier1_mask"][0].tolist() == [True] * n + [False] * (4 - n)
        assert torch.isfinite(out.embedding).all() and out.attention[0, :n].sum().item() == pytest.approx(1.0)
        loss = model.auxiliary_losses(out, {"label": torch.tensor([1])})["tier1"]
        want = F.cross_entropy(out.aux["tier1_logits"][0, :n], torch.ones(n, dtype=torch.long))
        torch.testing.assert_close(loss, want)


def test_pseudo_bags_random_in_training_and_by_patch_order_in_eval() -> None:
    model = build()
    assert torch.equal(model.pseudo_bags(10), torch.arange(10) % 4)
    model.train()
    torch.manual_seed(3)
    a = model.pseudo_bags(10)
    torch.manual_seed(3)
    assert torch.equal(a, model.pseudo_bags(10))                                   # seeded by torch's RNG
    assert not torch.equal(a, model.pseudo_bags(10))
    assert torch.bincount(a).tolist() == [3, 3, 2, 2]                                # np.array_split's sizes


def test_eval_output_depends_only_on_pseudo_bag_membership() -> None:
    """permutation_invariant is False: a reorder that keeps each patch's i mod 4 keeps the output, others do not."""
    model = build()
    feats, mask, coords = padded_batch([12], pad_to=12)
    keep = torch.tensor([8, 5, 2, 3, 0, 9, 10, 7, 4, 1, 6, 11])                     # same residues mod 4
    mix = torch.tensor([1, 0, *range(2, 12)])                                      # two patches change pseudo-bag
    with torch.no_grad():
        base, same, other = (model(feats[:, p], mask, coords) for p in (torch.arange(12), keep, mix))
    torch.testing.assert_close(same.embedding, base.embedding, atol=1e-6, rtol=0)
    torch.testing.assert_close(same.attention, base.attention[:, keep], atol=1e-7, rtol=0)
    assert not torch.allclose(other.embedding, base.embedding, atol=1e-4)


def test_tier1_loss_ignores_unlabelled_slides_and_refuses_bad_labels() -> None:
    model = build(tier1_weight=0.5)
    feats, mask, coords = padded_batch([9, 6, 0], pad_to=9)
    out = model(feats, mask, coords)
    logits = out.aux["tier1_logits"]
    got = model.auxiliary_losses(out, {"label": torch.tensor([2, -100, 1])})["tier1"]
    torch.testing.assert_close(got, 0.5 * F.cross_entropy(logits[0], torch.full((4,), 2)))
    with pytest.raises(MilkitError, match="n_classes = 3"):
        model.auxiliary_losses(out, {"label": torch.tensor([3, 0, 0])})
    with pytest.raises(MilkitError, match="classification head"):
        model.auxiliary_losses(out, {"time": torch.ones(3)})
    assert model.auxiliary_losses(out, {"label": torch.tensor([-100, -100, 0])})["tier1"].item() == 0.0


@pytest.mark.parametrize("distill", ["AFS", "MaxMinS", "MaxS"])
def test_every_parameter_is_trained_by_head_plus_tier1_loss(distill: str) -> None:
    model = build(distill=distill, total_instance=8, num_res_blocks=1, dropout=0.1).train()
    feats, mask, coords = padded_batch([9, 20], pad_to=20)
    out = model(feats, mask, coords)
    tier1 = model.auxiliary_losses(out, {"label": torch.tensor([0, 2])})["tier1"]
    (out.embedding.square().sum() + (out.attention * torch.arange(20.0)).sum() + tier1).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_bf16_autocast_with_an_empty_bag() -> None:
    model = build(distill="MaxMinS", total_instance=8)
    feats, mask, coords = padded_batch([30, 0, 3], pad_to=30)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(feats, mask, coords)
    assert torch.isfinite(out.embedding.float()).all() and torch.isfinite(out.attention.float()).all()


def test_default_architecture_matches_the_reference() -> None:
    """in 1024 -> mDim 512, gated attentions D = 128: the reference's modules less the tier-2 fc (the head)."""
    model = DTFD(DTFDConfig(), in_dim=1024)
    cfg = model.config
    assert (cfg.num_groups, cfg.distill, cfg.embed_dim, cfg.num_res_blocks, cfg.dropout, cfg.total_instance) == (
        4, "AFS", 512, 0, 0.0, 4)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    want = (count(ref.DimReduction(1024, 512)) + count(ref.Attention_Gated(512)) + count(ref.Classifier_1fc(512, 2))
            + count(ref.Attention_with_Classifier(512).attention))
    assert count(model) == want == 788_228


def test_no_tier1_classifier_with_afs_and_weight_0() -> None:
    model = build(tier1_weight=0.0)
    assert model.classifier1 is None
    feats, mask, coords = padded_batch([9, 3], pad_to=9)
    out = model(feats, mask, coords)
    assert model.auxiliary_losses(out, {"label": torch.tensor([0, 1])}) == {}
    assert build(tier1_weight=0.0, distill="MaxS", total_instance=4).classifier1 is not None  # its CAM selects


def test_config_refuses_too_few_instances_for_instance_distillation() -> None:
    with pytest.raises(ValueError, match="total_instance"):
        DTFDConfig(distill="MaxMinS", total_instance=2, num_groups=4)
    DTFDConfig(distill="AFS", total_instance=2, num_groups=4)


def test_tier1_loss_reaches_metrics_jsonl(train_briefly, registries) -> None:
    epochs = train_briefly(registries, name="dtfd", embed_dim=16, attn_dim=8, n_classes=3,
                           train={"lr": 1e-3, "grad_clip_norm": 5})
    assert len(epochs) == 2
    for e in epochs:
        assert 0 < e["train_aux_tier1"] < e["train_loss"]
