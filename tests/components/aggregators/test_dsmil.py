"""DSMIL aggregator: parity with the reference forward and loss (_reference_dsmil), padding, the
max-instance loss as an auxiliary term, training, and the term in metrics.jsonl of a real run."""

import pytest
import torch
import torch.nn.functional as F

import _reference_dsmil as ref
from milkit.components.aggregators.dsmil import DSMIL, DSMILConfig
from milkit.components.heads.classification import Classification, ClassificationConfig
from milkit.errors import MilkitError
from milkit.testing import check_aggregator
from _bags import junk_padded

K = 24                                  # feature width (the reference's feats_size)
SIZES = [1, 3, 17, 64]                  # bag sizes, batched together with padding


def build_pair(n_classes: int = 2, nonlinear: bool = True, passing_v: bool = False):
    """A random reference MILNet (eval) and milkit's aggregator + classification head with the same weights."""
    torch.manual_seed(n_classes + 2 * nonlinear + 4 * passing_v)
    milnet = ref.MILNet(ref.FCLayer(K, n_classes),
                        ref.BClassifier(K, n_classes, dropout_v=0.1, nonlinear=nonlinear, passing_v=passing_v)).eval()
    agg = DSMIL(DSMILConfig(n_classes=n_classes, nonlinear=nonlinear, passing_v=passing_v, dropout_v=0.1),
                in_dim=K).eval()
    head = Classification(ClassificationConfig(n_boot=0), in_dim=agg.out_dim,
                          target_state={"classes": [f"c{i}" for i in range(max(n_classes, 2))]}).eval()
    agg_sd, head_sd = {}, {}
    for key, value in milnet.state_dict().items():
        if key == "b_classifier.fcc.weight":               # Conv1d(C, C, K) on B [C, K] == Linear(C * K, C)
            head_sd["classifier.1.weight"] = value.reshape(n_classes, n_classes * K)
        elif key == "b_classifier.fcc.bias":
            head_sd["classifier.1.bias"] = value
        else:
            agg_sd[key.replace("i_classifier.fc.0.", "instance_classifier.").removeprefix("b_classifier.")] = value
    if n_classes == 1:  # a 2-class head: logit 1 - logit 0 = the single fcc output, softmax = its sigmoid
        head_sd = {k: torch.cat([torch.zeros_like(v), v]) for k, v in head_sd.items()}
    agg.load_state_dict(agg_sd, strict=True)
    head.load_state_dict(head_sd, strict=True)
    return milnet, agg, head


def padded_batch(lengths: list[int], pad_to: int, seed: int = 1):
    return junk_padded(lengths, K, pad_to, seed)   # junk is large: it would win the max


def onehot(label: int, n_classes: int) -> torch.Tensor:
    return (F.one_hot(torch.tensor(label), max(n_classes, 2))[-n_classes:]).float()   # C = 1: [label == 1]


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(DSMIL)
    check_aggregator(DSMIL, {"n_classes": 3, "nonlinear": False, "passing_v": True, "dropout_v": 0.2, "query_dim": 8})
    check_aggregator(DSMIL, {"n_classes": 1})
    assert registries.aggregators.get("dsmil") is DSMIL


@pytest.mark.parametrize(("n_classes", "nonlinear", "passing_v"),
                         [(2, True, False), (2, False, True), (1, True, False), (3, True, True), (3, False, False)])
def test_parity_with_the_reference(n_classes: int, nonlinear: bool, passing_v: bool) -> None:
    """Same weights, one padded batch vs the reference bag by bag: instance scores, A, B, bag logits and losses."""
    milnet, agg, head = build_pair(n_classes, nonlinear, passing_v)
    feats, mask, coords = padded_batch(SIZES, pad_to=70)
    labels = torch.tensor([i % max(n_classes, 2) for i in range(len(SIZES))])
    with torch.no_grad():
        out = agg(feats, mask, coords)
        logits = head(out).values["logits"]                                        # b max(C, 2)
        ref_max_losses = []
        for i, n in enumerate(SIZES):
            classes, bag_pred, A, B = milnet(feats[i, :n])
            torch.testing.assert_close(out.aux["instance_logits"][i, :n], classes, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.aux["attention"][i, :, :n], A.T, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.embedding[i], B.flatten(), atol=1e-5, rtol=0)
            torch.testing.assert_close(out.attention[i, :n], A.mean(1), atol=1e-5, rtol=0)
            bag_loss, max_loss, _ = ref.dsmil_bag_loss(milnet, feats[i, :n], onehot(int(labels[i]), n_classes))
            if n_classes == 1:   # softmax CE on [0, l] is the reference's BCE on l: the bag loss matches too
                torch.testing.assert_close(logits[i, 1] - logits[i, 0], bag_pred[0, 0], atol=1e-5, rtol=0)
                ce = head.loss(head(agg(feats[i:i + 1, :n], mask[i:i + 1, :n], coords[i:i + 1, :n])),
                               {"label": labels[i:i + 1]})
                torch.testing.assert_close(ce, bag_loss, atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(logits[i], bag_pred[0], atol=1e-5, rtol=0)
            ref_max_losses.append(max_loss)
        aux = agg.auxiliary_losses(out, {"label": labels})["max_instance"]
    torch.testing.assert_close(aux, torch.stack(ref_max_losses).mean(), atol=1e-5, rtol=0)
    assert torch.all(out.attention[~mask] == 0) and torch.all(out.aux["attention"].transpose(1, 2)[~mask] == 0)


def test_padding_and_empty_bags() -> None:
    _, agg, _ = build_pair(3)
    lengths = [9, 4, 0]
    feats, mask, coords = padded_batch(lengths, pad_to=12)
    with torch.no_grad():
        both = agg(feats, mask, coords)
        for i, n in enumerate(lengths[:2]):
            alone = agg(feats[i:i + 1, :n], mask[i:i + 1, :n], coords[i:i + 1, :n])
            torch.testing.assert_close(both.embedding[i], alone.embedding[0], atol=1e-6, rtol=0)
            torch.testing.assert_close(both.attention[i, :n], alone.attention[0], atol=1e-7, rtol=0)
            torch.testing.assert_close(both.aux["max_logits"][i], alone.aux["max_logits"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(both.attention.sum(1), torch.tensor([1.0, 1.0, 0.0]))
    assert both.embedding[2].abs().sum() == 0 and both.aux["max_logits"][2].abs().sum() == 0
    got = agg.auxiliary_losses(both, {"label": torch.tensor([2, -100, 1])})["max_instance"]
    want = F.binary_cross_entropy_with_logits(both.aux["max_logits"][0], onehot(2, 3))
    torch.testing.assert_close(got, want)                                          # -100 and the empty bag left out


def test_instance_loss_weight_and_errors() -> None:
    agg = DSMIL(DSMILConfig(instance_weight=0.25), in_dim=K).eval()
    feats, mask, coords = padded_batch([5, 6], pad_to=6)
    out = agg(feats, mask, coords)
    max_logits = out.aux["max_logits"]
    want = 0.25 * F.binary_cross_entropy_with_logits(max_logits, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(agg.auxiliary_losses(out, {"label": torch.tensor([1, 0])})["max_instance"], want)
    with pytest.raises(MilkitError, match="n_classes = 2"):
        agg.auxiliary_losses(out, {"label": torch.tensor([2, 0])})
    with pytest.raises(MilkitError, match="classification head"):
        agg.auxiliary_losses(out, {"time": torch.ones(2)})
    binary = DSMIL(DSMILConfig(n_classes=1), in_dim=K)
    with pytest.raises(MilkitError, match="1 only for two classes"):
        binary.auxiliary_losses(binary(feats, mask, coords), {"label": torch.tensor([2, 0])})
    assert agg.auxiliary_losses(out, {"label": torch.tensor([-100, -100])})["max_instance"].item() == 0.0


def test_training_step_matches_the_reference_gradients() -> None:
    """head + 1.0 * max_instance with C = 1 is twice the reference's 0.5 * bag + 0.5 * max: same gradients x 2."""
    milnet, agg, head = build_pair(1, nonlinear=True, passing_v=True)
    feats, mask, coords = padded_batch([11], pad_to=11)
    out = agg(feats, mask, coords)
    label = torch.tensor([1])
    loss = head.loss(head(out), {"label": label}) + agg.auxiliary_losses(out, {"label": label})["max_instance"]
    loss.backward()
    _, _, ref_loss = ref.dsmil_bag_loss(milnet, feats[0], onehot(1, 1))
    ref_loss.backward()
    torch.testing.assert_close(loss, 2 * ref_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(agg.instance_classifier.weight.grad, 2 * milnet.i_classifier.fc[0].weight.grad,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(agg.q[0].weight.grad, 2 * milnet.b_classifier.q[0].weight.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(agg.v[1].weight.grad, 2 * milnet.b_classifier.v[1].weight.grad, atol=1e-5, rtol=0)
    fcc = milnet.b_classifier.fcc.weight.grad.flatten()
    torch.testing.assert_close(head.classifier[1].weight.grad[1] - head.classifier[1].weight.grad[0], 4 * fcc,
                               atol=1e-5, rtol=0)  # d/dw1 - d/dw0 of CE on [w0.x, w1.x] = 2 * d/dl of BCE


def test_default_architecture_matches_the_reference() -> None:
    """train_tcga.py's MILNet (feats_size 512, num_classes 2, non_linearity 1): aggregator + head = its parameters."""
    agg = DSMIL(DSMILConfig(), in_dim=512)
    cfg = agg.config
    assert (cfg.n_classes, cfg.query_dim, cfg.nonlinear, cfg.passing_v, cfg.dropout_v, cfg.instance_weight) == (
        2, 128, True, False, 0.0, 1.0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    milnet = ref.MILNet(ref.FCLayer(512, 2), ref.BClassifier(512, 2, nonlinear=True))
    head = Classification(ClassificationConfig(n_boot=0), in_dim=agg.out_dim, target_state={"classes": ["a", "b"]})
    assert agg.out_dim == 1024 and count(agg) + count(head) == count(milnet) == 85_252


def test_bf16_autocast_stays_finite() -> None:
    _, agg, _ = build_pair(3, passing_v=True)
    feats, mask, coords = padded_batch([7, 2], pad_to=7)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = agg(feats, mask, coords)
    assert torch.isfinite(out.embedding.float()).all() and torch.isfinite(out.attention.float()).all()


def test_max_instance_loss_reaches_metrics_jsonl(train_briefly, registries) -> None:
    epochs = train_briefly(registries, name="dsmil", n_classes=3, query_dim=16, train={"lr": 1e-3})
    assert len(epochs) == 2
    for e in epochs:
        assert 0 < e["train_aux_max_instance"] < e["train_loss"]
