"""RRT-MIL aggregator: parity with the reference code, masks, architecture, gradients, bf16, training."""

import pytest
import torch

from milkit.components.aggregators.rrt import RRT, RRTConfig, per_region
from milkit.testing import check_aggregator
import _reference_rrt as ref
from _bags import junk_padded

SMALL = {"embed_dim": 32, "heads": 4, "crmsa_heads": 4, "epeg_k": 5}
IN_DIM = 24


def padded_batch(lengths: list[int], pad_to: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, IN_DIM, pad_to)


def reference_and_ours(**cfg) -> tuple[ref.RRTMIL, RRT]:
    """The reference RRTMIL (main.py's model_params) with its own initialisation, and milkit's aggregator
    holding the same weights (upstream's input projection is fixed at 512 wide: embed_dim = 512)."""
    c = RRTConfig(**cfg)
    torch.manual_seed(0)
    theirs = ref.RRTMIL(
        input_dim=IN_DIM, n_classes=3, dropout=c.dropout, act=c.act, region_num=c.region_num, pos="none",
        pos_pos=0, pool="attn", peg_k=7, drop_path=0.0, n_layers=c.n_layers, n_heads=c.heads, attn="rmsa",
        da_act=c.da_act, trans_dropout=c.trans_dropout, ffn=False, mlp_ratio=4.0, trans_dim=64, epeg=c.epeg,
        min_region_num=0, qkv_bias=c.qkv_bias, epeg_k=c.epeg_k, epeg_2d=False, epeg_bias=c.epeg_bias,
        epeg_type="attn", region_attn="native", peg_1d=False, cr_msa=c.cr_msa, crmsa_k=c.crmsa_k,
        all_shortcut=c.all_shortcut, crmsa_mlp=c.crmsa_mlp, crmsa_heads=c.crmsa_heads).eval()
    ours = RRT(c, in_dim=IN_DIM).eval()
    state = {}
    for key, value in theirs.state_dict().items():
        key = key.removeprefix("online_encoder.").replace("pool_fn.attention.", "")
        if key.startswith("layers."):                        # R-MSA: our TransLayer holds the InnerAttention
            key = key.replace("attn.attn.", "attn.")
        if not key.startswith("predictor."):                 # the predictor is milkit's head
            state[key] = value
    ours.load_state_dict(state, strict=True)
    return theirs, ours


CONFIGS = {
    "main.py defaults": {},
    "C16-R50": {"epeg_k": 15, "crmsa_k": 1, "all_shortcut": True},
    "NSCLC-PLIP": {"all_shortcut": True, "crmsa_mlp": True, "epeg_k": 13, "crmsa_k": 3, "crmsa_heads": 1},
    "ablations": {"n_layers": 3, "region_num": 4, "act": "gelu", "da_act": "relu", "epeg_bias": False},
    "no CR-MSA, no EPEG": {"cr_msa": False, "epeg": False, "qkv_bias": False},
}


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(RRT, SMALL)
    check_aggregator(RRT, {**SMALL, "region_num": 2, "crmsa_mlp": True, "all_shortcut": True, "n_layers": 3})
    assert registries.aggregators.get("rrt") is RRT
    assert RRT.permutation_invariant is False


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_with_the_reference_on_a_padded_batch(name: str) -> None:
    """Bags of 1, 7, 50, 300 and 1000 patches padded into one batch == the reference on each bag alone."""
    theirs, ours = reference_and_ours(**CONFIGS[name])
    lengths = [7, 1000, 1, 50, 300]
    feats, mask, coords = padded_batch(lengths, pad_to=1010)
    with torch.no_grad():
        out = ours(feats, mask, coords)
        for i, n in enumerate(lengths):
            x = feats[i:i + 1, :n]
            logits, attn = theirs(x, return_attn=True)
            pooled = theirs.pool_fn(theirs.online_encoder(theirs.dp(theirs.patch_to_emb(x))))
            torch.testing.assert_close(out.embedding[i], pooled[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.attention[i, :n], attn[0], atol=1e-6, rtol=0)
            torch.testing.assert_close(theirs.predictor(out.embedding[i:i + 1]), logits, atol=1e-5, rtol=0)
    assert torch.all(out.attention[~mask] == 0)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(5))


def test_regions_follow_the_reference_partition() -> None:
    """per_region == upstream's padding + region_partition ... region_reverse + crop, for several bag sizes."""
    for n, region_num in ((1, 8), (64, 8), (65, 8), (1000, 8), (50, 4), (7, 2)):
        x = torch.randn(n, 3)
        seen = []
        out = per_region(lambda r: seen.append(r) or r * 2, x, region_num)
        layer = ref.RegionAttntion(3, num_heads=1, region_num=region_num)
        padded, h, w, add, _, size = layer.padding(x[None])
        want = ref.region_partition(padded.view(1, h, w, 3), size).view(-1, size * size, 3)
        assert seen[0].shape == want.shape == (region_num ** 2, size * size, 3) and torch.equal(seen[0], want)
        assert torch.equal(out, x * 2)


def test_padding_never_changes_outputs_and_empty_bags() -> None:
    torch.manual_seed(0)
    model = RRT(RRTConfig(**SMALL, region_num=2), in_dim=IN_DIM).eval()
    lengths = [37, 5, 0, 1]
    feats, mask, coords = padded_batch(lengths, pad_to=50)
    with torch.no_grad():
        both = model(feats, mask, coords)
        for i, n in enumerate(lengths):
            alone = model(feats[i:i + 1, :n], mask[i:i + 1, :n], coords[i:i + 1, :n])
            torch.testing.assert_close(both.embedding[i], alone.embedding[0], atol=1e-6, rtol=0)
            torch.testing.assert_close(both.attention[i, :n], alone.attention[0], atol=1e-7, rtol=0)
    assert both.embedding[2].abs().sum() == 0 and both.attention[2].abs().sum() == 0
    torch.testing.assert_close(both.attention.sum(1), torch.tensor([1.0, 1.0, 0.0, 1.0]))


def test_patch_order_matters() -> None:
    """Regions are blocks of the grid in stored patch order: a reorder changes the re-embedding."""
    _, model = reference_and_ours(region_num=2)
    feats, mask, coords = padded_batch([30], pad_to=30)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(feats, mask, coords), model(feats[:, perm], mask, coords)
    assert not torch.allclose(a.embedding, b.embedding, atol=1e-4)


def test_default_architecture_matches_the_reference() -> None:
    """main.py's defaults (da_act tanh as every README command) on 1024-d features, less the predictor."""
    model = RRT(RRTConfig(), in_dim=1024)
    c = model.config
    assert (c.embed_dim, c.region_num, c.n_layers, c.heads, c.epeg_k, c.crmsa_k, c.crmsa_heads) == (
        512, 8, 2, 8, 15, 3, 8)
    assert (c.dropout, c.trans_dropout, c.act, c.da_act, c.all_shortcut, c.crmsa_mlp) == (
        0.25, 0.1, "relu", "tanh", False, False)
    upstream = ref.RRTMIL(input_dim=1024, da_act="tanh", epeg_k=15, crmsa_k=3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == count(upstream) - count(upstream.predictor) == 2_696_448
    assert all(torch.all(p == 0) for n, p in model.named_parameters() if n.endswith("bias") and "norm" not in n)
    w = model.patch_to_emb[0].weight                                           # xavier normal
    assert abs(w.std().item() - (2 / (1024 + 512)) ** 0.5) < 2e-3


def test_gradients_reach_every_parameter() -> None:
    _, model = reference_and_ours(region_num=2, crmsa_mlp=True)
    model.train()
    feats, mask, coords = padded_batch([9, 40], pad_to=40)
    out = model(feats, mask, coords)
    (out.embedding.square().sum() + (out.attention * torch.arange(40.0)).sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_bf16_autocast_close_to_fp32() -> None:
    _, model = reference_and_ours()
    feats, mask, coords = padded_batch([500, 3, 0], pad_to=500)
    with torch.no_grad():
        want = model(feats, mask, coords)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(feats, mask, coords)
    assert torch.isfinite(got.embedding.float()).all() and torch.isfinite(got.attention.float()).all()
    cos = torch.nn.functional.cosine_similarity(got.embedding[:2].float(), want.embedding[:2])
    assert (cos > 0.99).all()


def test_config_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="crmsa_heads"):
        RRTConfig(embed_dim=36, heads=4, crmsa_heads=8)
    with pytest.raises(ValueError, match="odd"):
        RRTConfig(epeg_k=14)


def test_a_short_training_reduces_the_loss() -> None:
    torch.manual_seed(0)
    model = RRT(RRTConfig(embed_dim=16, heads=2, crmsa_heads=2, region_num=2, dropout=0.0, trans_dropout=0.0),
                in_dim=IN_DIM).train()
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
