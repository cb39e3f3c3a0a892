"""dinov2-vitl14: loads DINOv2 teacher checkpoints (block_chunks, fused SwiGLU) and matches DINOv2's forward."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from milkit.errors import CheckpointError
from milkit.components.extractors.dinov2 import DINOv2Config, DINOv2ViTL14, convert_dinov2_state, swiglu_hidden

SMALL = {"img_size": 28, "patch_size": 14, "embed_dim": 32, "depth": 4, "num_heads": 4}


def dinov2_keys(d: int, depth: int, chunks: int, grid: int, registers: int = 0) -> dict[str, tuple]:
    """Key -> shape of facebookresearch/dinov2 DinoVisionTransformer (ffn_layer='swiglufused', init_values set)."""
    hid = swiglu_hidden(d)
    shapes = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + grid * grid, d), "mask_token": (1, d),
              "patch_embed.proj.weight": (d, 3, 14, 14), "patch_embed.proj.bias": (d,),
              "norm.weight": (d,), "norm.bias": (d,)}
    if registers:
        shapes["register_tokens"] = (1, registers, d)
    size = depth // chunks
    for i in range(depth):
        p = f"blocks.{i // size}.{i}."
        shapes.update({p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "attn.qkv.weight": (3 * d, d),
                       p + "attn.qkv.bias": (3 * d,), p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
                       p + "ls1.gamma": (d,), p + "norm2.weight": (d,), p + "norm2.bias": (d,),
                       p + "mlp.w12.weight": (2 * hid, d), p + "mlp.w12.bias": (2 * hid,),
                       p + "mlp.w3.weight": (d, hid), p + "mlp.w3.bias": (d,), p + "ls2.gamma": (d,)})
    return shapes


def reference(s: dict[str, torch.Tensor], x: torch.Tensor, d: int, heads: int, registers: int) -> torch.Tensor:
    """DINOv2 forward (prepare_tokens_with_masks, Block, final norm, CLS) on the raw checkpoint keys."""
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    t = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=14).flatten(2).transpose(1, 2)
    b = t.shape[0]
    t = torch.cat([s["cls_token"].expand(b, -1, -1), t], 1) + s["pos_embed"]
    if registers:
        t = torch.cat([t[:, :1], s["register_tokens"].expand(b, -1, -1), t[:, 1:]], 1)
    blocks = sorted({k.rsplit(".", 2)[0] for k in s if k.startswith("blocks.") and "norm1.weight" in k},
                    key=lambda p: int(p.split(".")[2]))
    for p in blocks:
        p += "."
        y = F.layer_norm(t, (d,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        a = (torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, -1) @ v).transpose(1, 2).reshape(b, -1, d)
        t = t + s[p + "ls1.gamma"] * F.linear(a, s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        y = F.layer_norm(t, (d,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps=1e-6)
        x1, x2 = F.linear(y, s[p + "mlp.w12.weight"], s[p + "mlp.w12.bias"]).chunk(2, -1)
        t = t + s[p + "ls2.gamma"] * F.linear(F.silu(x1) * x2, s[p + "mlp.w3.weight"], s[p + "mlp.w3.bias"])
    return F.layer_norm(t, (d,), s["norm.weight"], s["norm.bias"], eps=1e-6)[:, 0]


def teacher_checkpoint(path: Path, registers: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(registers)
    raw = {k: torch.randn(shape) * 0.2 for k, shape in dinov2_keys(32, 4, 2, 2, registers).items()}
    heads = {"dino_head.mlp.0.weight": torch.zeros(8, 32), "ibot_head.last_layer.weight_g": torch.zeros(8, 1)}
    torch.save({"teacher": {f"backbone.{k}": v for k, v in raw.items()} | heads, "iteration": 5}, path)
    return raw


@pytest.mark.parametrize("registers", [0, 4])
def test_teacher_checkpoint_matches_dinov2_forward(registers: int, tmp_path: Path) -> None:
    raw = teacher_checkpoint(tmp_path / "t.pth", registers)
    model = DINOv2ViTL14(DINOv2Config(**SMALL, num_registers=registers, weights=tmp_path / "t.pth")).eval()
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(raw, x, 32, 4, registers), atol=1e-5, rtol=1e-4)
    assert model.feature_dim == 32 and model.weights_sha256


def test_histgen_vitl14_layout_maps_exactly() -> None:
    """The full HistGen layout (ViT-L/14, 224 px, block_chunks=4) converts onto our parameters one to one."""
    shapes = dinov2_keys(1024, 24, 4, 16)
    assert shapes["blocks.1.6.mlp.w12.weight"] == (5472, 1024) and shapes["blocks.3.23.mlp.w3.weight"] == (1024, 2736)
    converted = convert_dinov2_state({f"backbone.{k}": torch.empty(s, device="meta") for k, s in shapes.items()})
    with torch.device("meta"):
        model = DINOv2ViTL14(DINOv2Config())
    own = model.model.state_dict()
    assert set(converted) == set(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    assert model.feature_dim == 1024 and model.tile_size_px == 224


def test_mismatched_checkpoint_is_explained(tmp_path: Path) -> None:
    teacher_checkpoint(tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*blocks\.0\.attn\.qkv\.weight"):
        DINOv2ViTL14(DINOv2Config(**{**SMALL, "embed_dim": 64}, weights=tmp_path / "t.pth"))
    with pytest.raises(CheckpointError, match="missing keys: blocks.4"):
        DINOv2ViTL14(DINOv2Config(**{**SMALL, "depth": 6}, weights=tmp_path / "t.pth"))
