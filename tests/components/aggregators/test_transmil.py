"""TransMIL aggregator, Nystrom attention and PPEG: masks, shapes, gradients, bf16, architecture."""

import math

import pytest
import torch

from milkit.components.aggregators.transmil import TransMIL, TransMILConfig
from milkit.nn.nystrom import NystromAttention, moore_penrose_pinv
from milkit.testing import check_aggregator
from _bags import junk_padded

SMALL = {"embed_dim": 32, "heads": 4, "num_landmarks": 8, "dropout": 0.0}


def build(in_dim: int = 16, **cfg) -> TransMIL:
    torch.manual_seed(0)
    return TransMIL(TransMILConfig(**{**SMALL, **cfg}), in_dim=in_dim).eval()


def padded_batch(lengths: list[int], in_dim: int, pad_to: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, in_dim, pad_to)


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(TransMIL, SMALL)
    assert registries.aggregators.get("transmil") is TransMIL
    assert TransMIL.permutation_invariant is False


def test_padding_never_changes_outputs() -> None:
    """Two bags (one longer than the landmark count) padded together == each alone."""
    model = build(num_landmarks=8)
    feats, mask, coords = padded_batch([37, 5], 16, pad_to=50)
    with torch.no_grad():
        both = model(feats, mask, coords)
        for i, n in enumerate([37, 5]):
            alone = model(feats[i:i + 1, :n], mask[i:i + 1, :n], coords[i:i + 1, :n])
            torch.testing.assert_close(both.embedding[i], alone.embedding[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(both.attention[i, :n], alone.attention[0], atol=1e-6, rtol=1e-5)
    assert both.embedding.shape == (2, 32) and both.attention.shape == (2, 50)
    assert torch.all(both.attention[~mask] == 0)
    torch.testing.assert_close(both.attention.sum(1), torch.ones(2))


def test_bag_of_one_and_empty_bag() -> None:
    model = build()
    feats, mask, coords = padded_batch([1, 0], 16, pad_to=4)
    with torch.no_grad():
        out = model(feats, mask, coords)
    assert torch.isfinite(out.embedding).all()
    assert out.attention[0].tolist() == [1.0, 0.0, 0.0, 0.0] and out.attention[1].tolist() == [0.0] * 4


def test_square_padding_folds_repeated_patches_back() -> None:
    """5 patches fill a 3x3 grid by repeating patches 0-3; their attention is summed onto them."""
    model = build()
    feats, mask, coords = padded_batch([5], 16, pad_to=5)
    with torch.no_grad():
        out = model(feats, mask, coords)
    assert out.attention.shape == (1, 5) and out.attention.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_gradients_reach_every_parameter() -> None:
    model = build().train()
    feats, mask, coords = padded_batch([9, 20], 16, pad_to=20)
    out = model(feats, mask, coords)
    (out.embedding.square().sum() + (out.attention * torch.arange(20.0)).sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_default_architecture_matches_the_paper() -> None:
    """fc 1024->512, 2 Nystrom layers (8 heads, 256 landmarks), PPEG: 2,671,120 parameters as upstream."""
    model = TransMIL(TransMILConfig(), in_dim=1024)
    assert sum(p.numel() for p in model.parameters()) == 2_671_120
    attn = model.layer1.attn
    assert (attn.heads, attn.dim_head, attn.num_landmarks, attn.pinv_iterations) == (8, 64, 256, 6)
    assert attn.res_conv.kernel_size == (33, 1)


@pytest.mark.parametrize("n", [7, 300])
def test_bf16_autocast_no_nan_and_close_to_fp32(n: int) -> None:
    model = TransMIL(TransMILConfig(num_landmarks=64), in_dim=64).eval()
    feats, mask, coords = padded_batch([n], 64, pad_to=n)
    with torch.no_grad():
        ref = model(feats, mask, coords)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(feats, mask, coords)
    assert torch.isfinite(out.embedding).all() and torch.isfinite(out.attention).all()
    cos = torch.nn.functional.cosine_similarity(out.embedding.float(), ref.embedding).item()
    assert cos > 0.99


def test_pinv_runs_in_fp32_under_autocast() -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.eye(16) * 4 + torch.randn(2, 16, 16, generator=gen) * 0.1).softmax(-1)  # well conditioned
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = moore_penrose_pinv(x.bfloat16(), iters=12)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, torch.linalg.pinv(x.bfloat16().float()), atol=1e-4, rtol=1e-4)


def test_nystrom_is_exact_when_every_token_is_a_landmark() -> None:
    torch.manual_seed(0)
    attn = NystromAttention(32, heads=4, dim_head=8, num_landmarks=16, pinv_iterations=40).eval()
    with torch.no_grad():
        attn.to_qkv.weight.mul_(2)                                    # condition number ~300: pinv converges
        x = torch.randn(2, 12, 32)
        got = attn(x)
        q, k, v = (t.unflatten(-1, (4, 8)).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, -1))
        full = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v + attn.res_conv(v)
        want = attn.to_out(full.transpose(1, 2).flatten(2))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        exact = torch.softmax(q[:, :, :1] @ k.transpose(-1, -2) / math.sqrt(8), -1).mean(1)[:, 0]
        torch.testing.assert_close(attn.query_attention(x, 0), exact)


def test_config_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TransMILConfig(embed_dim=30, heads=8)
    with pytest.raises(ValueError, match="odd"):
        TransMILConfig(residual_conv_kernel=32)
