"""CLAM-SB / CLAM-MB: parity with the reference forward and instance loss (_reference_clam), padding,
the clustering loss as an auxiliary term, and the term in metrics.jsonl of a real run."""

import math

import pytest
import torch
from _reference_clam import CLAM_MB, CLAM_SB, SmoothTop1SVM

from milkit.components.aggregators.clam import CLAMMB, CLAMSB, CLAMConfig, smooth_top1_svm
from milkit.components.heads.classification import Classification, ClassificationConfig
from milkit.errors import MilkitError
from milkit.testing import check_aggregator
from _bags import junk_padded

D, C = 20, 3
SIZES = [3, 8, 12, 40]  # n < k (clamped), n = k, k < n < 2k (top and bottom overlap), n >= 2k


def convert(ref_sd: dict[str, torch.Tensor], multi: bool, n_classes: int) -> tuple[dict, dict]:
    """Upstream state dict -> (aggregator state dict, classification-head state dict)."""
    agg, head = {}, {}
    for key, value in ref_sd.items():
        key = key.replace("attention_net.0.", "fc.0.").replace("attention_net.3.", "")
        key = key.replace("module.0.", "attention_a.0.")                            # Attn_Net (no gate)
        key = key.replace("module.3.", "attention_c.").replace("module.2.", "attention_c.")
        if not key.startswith(("classifiers.", "instance_loss_fn.")):  # SmoothTop1SVM's `labels` buffer
            agg[key] = value
    if multi:  # per-class Linear(512, 1) on M[c] == a block-diagonal Linear(c * 512, c) on M flattened
        e = ref_sd["classifiers.0.weight"].shape[1]
        head["classifier.1.weight"] = torch.block_diag(*[ref_sd[f"classifiers.{c}.weight"] for c in range(n_classes)])
        head["classifier.1.bias"] = torch.cat([ref_sd[f"classifiers.{c}.bias"] for c in range(n_classes)])
        assert head["classifier.1.weight"].shape == (n_classes, n_classes * e)
    else:
        head = {"classifier.1.weight": ref_sd["classifiers.weight"], "classifier.1.bias": ref_sd["classifiers.bias"]}
    return agg, head


def build_pair(multi: bool, inst_loss: str = "ce", subtyping: bool = True, gated: bool = True):
    """A random reference CLAM (eval) and milkit's aggregator + head with the same weights."""
    torch.manual_seed(0)
    loss_fn = SmoothTop1SVM(2) if inst_loss == "svm" else torch.nn.CrossEntropyLoss()
    ref = (CLAM_MB if multi else CLAM_SB)(gate=gated, dropout=0.25, k_sample=8, n_classes=C,
                                          instance_loss_fn=loss_fn, subtyping=subtyping, embed_dim=D).eval()
    with torch.no_grad():                                              # sharper attention than at init
        last = ref.attention_net[3].attention_c if gated else ref.attention_net[3].module[-1]
        last.weight.mul_(4.0)
    cfg = CLAMConfig(n_classes=C, inst_loss=inst_loss, subtyping=subtyping, gated=gated)
    agg = (CLAMMB if multi else CLAMSB)(cfg, in_dim=D).eval()
    head = Classification(ClassificationConfig(n_boot=0), in_dim=agg.out_dim,
                          target_state={"classes": [f"c{i}" for i in range(C)]}).eval()
    agg_sd, head_sd = convert(ref.state_dict(), multi, C)
    agg.load_state_dict(agg_sd, strict=True)
    head.load_state_dict(head_sd, strict=True)
    return ref, agg, head


def padded_batch(lengths: list[int], pad_to: int, seed: int = 1):
    return junk_padded(lengths, D, pad_to, seed)


def ref_bag(ref, feats: torch.Tensor, label: int):
    """The reference on one unpadded bag; k_sample clamped to n as milkit does (upstream raises for n < k)."""
    k, ref.k_sample = ref.k_sample, min(ref.k_sample, feats.shape[0])
    try:
        logits, _, attn, _, res = ref(feats, label=torch.tensor([label]), instance_eval=True)
    finally:
        ref.k_sample = k
    return logits, attn, res["instance_loss"]


PARITY = [(False, "ce", True, True), (True, "ce", True, True), (False, "svm", True, True),
          (True, "svm", True, True), (False, "ce", False, True), (True, "ce", False, True),
          (False, "ce", True, False), (True, "svm", False, False)]  # (multi, inst_loss, subtyping, gated)


@pytest.mark.parametrize(("multi", "inst_loss", "subtyping", "gated"), PARITY)
def test_logits_attention_and_instance_loss_match_the_reference(multi, inst_loss, subtyping, gated) -> None:
    ref, agg, head = build_pair(multi, inst_loss, subtyping, gated)
    labels = [i % C for i in range(len(SIZES))]
    feats, mask, coords = padded_batch(SIZES, pad_to=max(SIZES) + 5)
    worst = {"logits": 0.0, "attention": 0.0, "instance": 0.0}
    with torch.no_grad():
        out = agg(feats, mask, coords)
        logits = head(out).values["logits"]
        for b, (n, y) in enumerate(zip(SIZES, labels)):
            want_logits, want_attn, want_inst = ref_bag(ref, feats[b, :n], y)
            only_b = torch.tensor([y if i == b else -100 for i in range(len(SIZES))])
            got_inst = agg.auxiliary_losses(out, {"label": only_b})["instance"] / agg.config.inst_weight
            got_attn = out.aux["attention"][b, :, :n]                                   # c n
            torch.testing.assert_close(logits[b], want_logits[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got_attn, want_attn, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(out.attention[b, :n], want_attn.mean(0), atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(got_inst, torch.as_tensor(want_inst, dtype=torch.float32), atol=1e-5, rtol=1e-5)
            worst["logits"] = max(worst["logits"], (logits[b] - want_logits[0]).abs().max().item())
            worst["attention"] = max(worst["attention"], (got_attn - want_attn).abs().max().item())
            worst["instance"] = max(worst["instance"], abs(got_inst.item() - float(want_inst)))
        all_bags = agg.auxiliary_losses(out, {"label": torch.tensor(labels)})["instance"] / agg.config.inst_weight
        want_mean = sum(float(ref_bag(ref, feats[b, :n], y)[2]) for b, (n, y) in enumerate(zip(SIZES, labels))) / 4
    assert all_bags.item() == pytest.approx(want_mean, abs=1e-5)
    print(f"max |diff| vs reference ({'mb' if multi else 'sb'}, {inst_loss}, subtyping={subtyping}, "
          f"gated={gated}): {worst}")


def test_the_reference_cannot_sample_more_patches_than_a_bag_has() -> None:
    """Why k is clamped: upstream's topk(A, k_sample) raises for a bag of fewer than k patches."""
    ref, _, _ = build_pair(multi=False)
    with pytest.raises(RuntimeError):
        ref(torch.randn(5, D), label=torch.tensor([0]), instance_eval=True)


@pytest.mark.parametrize("cls", [CLAMSB, CLAMMB])
def test_padding_a_batch_changes_nothing(cls) -> None:
    torch.manual_seed(0)
    agg = cls(CLAMConfig(n_classes=C, k_sample=4), in_dim=D).eval()
    lengths, labels = [13, 3, 7], torch.tensor([2, 0, 1])
    feats, mask, coords = padded_batch(lengths, pad_to=20)
    with torch.no_grad():
        both = agg(feats, mask, coords)
        loss_both = agg.auxiliary_losses(both, {"label": labels})["instance"]
        alone_losses = []
        for b, n in enumerate(lengths):
            alone = agg(feats[b:b + 1, :n], mask[b:b + 1, :n], coords[b:b + 1, :n])
            torch.testing.assert_close(both.embedding[b], alone.embedding[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(both.attention[b, :n], alone.attention[0], atol=1e-6, rtol=1e-5)
            alone_losses.append(agg.auxiliary_losses(alone, {"label": labels[b:b + 1]})["instance"])
    assert torch.all(both.attention[~mask] == 0) and torch.all(both.aux["attention"].transpose(1, 2)[~mask] == 0)
    torch.testing.assert_close(both.attention.sum(1), torch.ones(3))
    torch.testing.assert_close(loss_both, torch.stack(alone_losses).mean(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cls", [CLAMSB, CLAMMB])
def test_conformance_kit_with_instance_classifiers(cls) -> None:
    """The default CLAM (instance classifiers built) passes every check but ``gradients``: the instance
    classifiers are trained by auxiliary_losses only, which the kit does not call (see the next test)."""
    check_aggregator(cls, {"n_classes": C, "k_sample": 2}, skip={"gradients"})


@pytest.mark.parametrize("cls", [CLAMSB, CLAMMB])
def test_forward_plus_instance_loss_reaches_every_parameter(cls) -> None:
    torch.manual_seed(0)
    agg = cls(CLAMConfig(n_classes=C, k_sample=2), in_dim=D).train()
    feats, mask, coords = padded_batch([6, 4, 9], pad_to=9)
    out = agg(feats, mask, coords)
    aux = agg.auxiliary_losses(out, {"label": torch.tensor([0, 1, 2])})
    (out.embedding.square().mean() + aux["instance"]).backward()
    missing = [n for n, p in agg.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_bag_weight_maps_to_clams_weighted_sum() -> None:
    """milkit's loss (head + aux) is CLAM's bag_weight * bag + (1 - bag_weight) * instance, divided by bag_weight."""
    ref, agg, head = build_pair(multi=False)
    assert agg.config.bag_weight == 0.7 and agg.config.inst_weight == pytest.approx(0.3 / 0.7)
    feats, mask, coords = padded_batch([10], pad_to=10)
    targets = {"label": torch.tensor([1])}
    with torch.no_grad():
        out = agg(feats, mask, coords)
        milkit_loss = head.loss(head(out), targets) + agg.auxiliary_losses(out, targets)["instance"]
        logits, _, inst = ref_bag(ref, feats[0], 1)
        clam_loss = 0.7 * torch.nn.functional.cross_entropy(logits, targets["label"]) + 0.3 * inst
    assert milkit_loss.item() == pytest.approx(clam_loss.item() / 0.7, abs=1e-5)


@pytest.mark.parametrize("cls", [CLAMSB, CLAMMB])
def test_bag_weight_one_switches_clustering_off(cls) -> None:
    agg = cls(CLAMConfig(bag_weight=1.0), in_dim=D)
    assert agg.instance_classifiers is None
    out = agg(*padded_batch([5], pad_to=5))
    assert agg.auxiliary_losses(out, {"label": torch.tensor([1])}) == {}


def test_unlabelled_bags_and_empty_bags_add_a_zero_term() -> None:
    agg = CLAMSB(CLAMConfig(n_classes=C), in_dim=D).eval()
    out = agg(*padded_batch([5, 0], pad_to=5))
    assert agg.auxiliary_losses(out, {"label": torch.tensor([-100, 1])})["instance"].item() == 0.0


def test_a_label_beyond_n_classes_names_the_key_to_set() -> None:
    agg = CLAMSB(CLAMConfig(n_classes=2), in_dim=D)
    out = agg(*padded_batch([5, 6], pad_to=6))
    with pytest.raises(MilkitError, match=r"n_classes = 2 .* class index 3; set \[aggregator\] n_classes"):
        agg.auxiliary_losses(out, {"label": torch.tensor([0, 3])})


def test_smooth_top1_svm_matches_smooth_topk_on_smooth_and_hard_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=gen) * torch.tensor([1.0, 8.0])       # some top-2 gaps above log(1e3)
    y = torch.randint(0, 2, (64,), generator=gen)
    gap = x.topk(2, 1).values
    assert ((gap[:, 0] - gap[:, 1]) >= math.log(1e3)).any() and ((gap[:, 0] - gap[:, 1]) < math.log(1e3)).any()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = smooth_top1_svm(a, y), SmoothTop1SVM(2)(b, y)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_default_sizes_match_the_reference() -> None:
    """size_arg 'small': fc 1024 -> 512, attention 512 -> 256; CLAM's parameters minus its bag classifier."""
    for multi, cls in ((False, CLAMSB), (True, CLAMMB)):
        ref = (CLAM_MB if multi else CLAM_SB)(n_classes=2, embed_dim=1024)
        ours = cls(CLAMConfig(), in_dim=1024)
        bag_classifier = sum(p.numel() for p in ref.classifiers.parameters())
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) - bag_classifier
        assert ours.out_dim == (1024 if multi else 512)
    assert CLAMSB(CLAMConfig(size_arg="big"), in_dim=64).attention_c.in_features == 384


@pytest.mark.parametrize("name", ["clam_sb", "clam_mb"])
def test_instance_loss_is_logged_in_metrics_jsonl(name, train_briefly, registries) -> None:
    epochs = train_briefly(registries, name=name, n_classes=3, k_sample=4, train={"lr": 1e-3})
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(math.isfinite(e["train_aux_instance"]) and e["train_aux_instance"] > 0 for e in epochs)
    assert all(e["train_loss"] > e["train_aux_instance"] for e in epochs)  # the term is part of the loss
