"""ILRA-MIL aggregator: parity with the reference code, masks, architecture, gradients, bf16, training."""

import pytest
import torch

from milkit.components.aggregators.ilra import ILRA, ILRAConfig
from milkit.testing import check_aggregator
import _reference_ilra as ref
from _bags import junk_padded

SMALL = {"hidden_dim": 32, "heads": 4}
IN_DIM = 24


def padded_batch(lengths: list[int], pad_to: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, IN_DIM, pad_to)


def reference_and_ours(**cfg) -> tuple[ref.ILRA, ILRA]:
    """The reference model with its own initialisation, and milkit's aggregator holding the same weights."""
    config = ILRAConfig(**{**SMALL, **cfg})
    torch.manual_seed(0)
    theirs = ref.ILRA(num_layers=config.num_layers, feat_dim=IN_DIM, n_classes=3, hidden_feat=config.hidden_dim,
                      num_heads=config.heads, topk=config.topk, ln=config.ln).eval()
    ours = ILRA(config, in_dim=IN_DIM).eval()
    state = {k.replace("pooling.S", "seeds").replace("pooling.mha.", "pooling."): v
             for k, v in theirs.state_dict().items() if not k.startswith("classifier.")}
    ours.load_state_dict(state, strict=True)
    return theirs, ours


def reference_pooling(theirs: ref.ILRA, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upstream forward of one bag [1, n, D] -> (NLP output [1, k, e], logits, NLP attention [1, k, n])."""
    seen = []
    hook = theirs.pooling.mha.multihead_attn.register_forward_hook(lambda m, i, o: seen.append(o[1]))
    try:
        logits = theirs(x)
        h = x
        for block in theirs.gab_blocks:
            h = block(h)
        feat = theirs.pooling(h)
    finally:
        hook.remove()
    return feat, logits, seen[0]


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(ILRA, SMALL)
    check_aggregator(ILRA, {**SMALL, "topk": 3, "ln": False, "num_layers": 1})
    assert registries.aggregators.get("ilra") is ILRA
    assert ILRA.permutation_invariant is True


@pytest.mark.parametrize(("topk", "ln", "layers"), [(1, True, 2), (1, False, 2), (4, True, 3)])
def test_parity_with_the_reference_on_a_padded_batch(topk: int, ln: bool, layers: int) -> None:
    """Bags of 1, 7, 50 and 300 patches padded into one batch == the reference on each bag alone."""
    theirs, ours = reference_and_ours(topk=topk, ln=ln, num_layers=layers)
    lengths = [7, 300, 1, 50]
    feats, mask, coords = padded_batch(lengths, pad_to=310)
    with torch.no_grad():
        out = ours(feats, mask, coords)
        for i, n in enumerate(lengths):
            feat, logits, attn = reference_pooling(theirs, feats[i:i + 1, :n])
            torch.testing.assert_close(out.embedding[i], feat.flatten(), atol=1e-5, rtol=0)
            torch.testing.assert_close(out.attention[i, :n], attn[0].mean(0), atol=1e-6, rtol=0)
            if topk == 1:
                torch.testing.assert_close(theirs.classifier(out.embedding[i:i + 1]), logits, atol=1e-5, rtol=0)
    assert out.embedding.shape == (4, 32 * topk) and torch.all(out.attention[~mask] == 0)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(4))


def test_empty_bag_matches_the_reference_and_ignores_its_padding() -> None:
    theirs, model = reference_and_ours()
    feats, mask, coords = padded_batch([5, 0], pad_to=6)
    with torch.no_grad():
        out = model(feats, mask, coords)
        other = model(feats * 3 + 1, mask, coords)
        feat, _, _ = reference_pooling(theirs, feats[1:, :0])                    # upstream on 0 patches
    assert out.attention[1].abs().sum() == 0
    torch.testing.assert_close(out.embedding[1], other.embedding[1], atol=0, rtol=0)
    torch.testing.assert_close(out.embedding[1], feat.flatten(), atol=1e-6, rtol=0)


def test_default_architecture_matches_the_reference() -> None:
    """Reference config (num_layers 2, hidden 256, 8 heads, topk 1, ln) on 1024-d features, less the classifier."""
    model = ILRA(ILRAConfig(), in_dim=1024)
    cfg = model.config
    assert (cfg.hidden_dim, cfg.num_layers, cfg.heads, cfg.topk, cfg.ln) == (256, 2, 8, 1, True)
    upstream = ref.ILRA(num_layers=2, feat_dim=1024, n_classes=2, hidden_feat=256, num_heads=8, topk=1, ln=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == count(upstream) - count(upstream.classifier) == 3_687_168
    assert model.out_dim == 256
    mha = model.pooling.multihead_attn
    assert torch.all(mha.in_proj_bias == 0) and torch.all(mha.out_proj.bias == 0)
    w = model.gab_blocks[0].project_forward.fc_k.weight                         # xavier normal: std sqrt(2/(in+out))
    assert abs(w.std().item() - (2 / (1024 + 256)) ** 0.5) < 2e-3


def test_gradients_reach_every_parameter() -> None:
    _, model = reference_and_ours(topk=2)
    model.train()
    feats, mask, coords = padded_batch([9, 20], pad_to=20)
    out = model(feats, mask, coords)
    (out.embedding.square().sum() + (out.attention * torch.arange(20.0)).sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_bf16_autocast_close_to_fp32() -> None:
    _, model = reference_and_ours()
    feats, mask, coords = padded_batch([200, 3, 0], pad_to=200)
    with torch.no_grad():
        want = model(feats, mask, coords)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(feats, mask, coords)
    assert torch.isfinite(got.embedding.float()).all() and torch.isfinite(got.attention.float()).all()
    cos = torch.nn.functional.cosine_similarity(got.embedding[:2].float(), want.embedding[:2])
    assert (cos > 0.99).all()


def test_config_rejects_heads_not_dividing_width() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ILRAConfig(hidden_dim=30, heads=8)


def test_a_short_training_reduces_the_loss() -> None:
    torch.manual_seed(0)
    model = ILRA(ILRAConfig(hidden_dim=16, heads=2), in_dim=IN_DIM).train()
    head = torch.nn.Linear(model.out_dim, 2)
    feats, mask, coords = padded_batch([30, 12, 25, 7], pad_to=30)
    labels = torch.tensor([0, 1, 0, 1])
    feats[labels == 1] += 0.5 * mask[labels == 1, :, None]                         # class 1: shifted patches
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(head(model(feats, mask, coords).embedding), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
