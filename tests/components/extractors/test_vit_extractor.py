"""vit: timm-format checkpoints load into the plain-torch ViT and match a reference forward."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from milkit.errors import CheckpointError
from milkit.components.extractors.vit import ViT, ViTConfig

BASE = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}
VARIANTS = {
    "uni-like": {"mlp": "gelu", "layer_scale": True},
    "uni2-like": {"mlp": "swiglu_packed", "num_registers": 2, "no_embed_class": True, "mlp_ratio": 2.5},
    "virchow-like": {"mlp": "swiglu_packed", "num_registers": 1, "pool": "cls+avg"},
    "swiglu-avg": {"mlp": "swiglu", "layer_scale": False, "pool": "avg", "qkv_bias": False},
}


def reference(state: dict[str, torch.Tensor], cfg: ViTConfig, x: torch.Tensor) -> torch.Tensor:
    """timm VisionTransformer.forward_features + pooling, written directly on the state dict."""
    s, d, h = state, cfg.embed_dim, cfg.num_heads
    x = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    t = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=cfg.patch_size)
    t = t.flatten(2).transpose(1, 2)
    b = t.shape[0]
    pre = [s["cls_token"].expand(b, -1, -1)] + ([s["reg_token"].expand(b, -1, -1)] if cfg.num_registers else [])
    t = torch.cat(pre + [t + s["pos_embed"]], 1) if cfg.no_embed_class else torch.cat(pre + [t], 1) + s["pos_embed"]
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        y = F.layer_norm(t, (d,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, s[p + "attn.qkv.weight"], s.get(p + "attn.qkv.bias"))
        q, k, v = qkv.reshape(b, -1, 3, h, d // h).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5, -1) @ v
        a = F.linear(a.transpose(1, 2).reshape(b, -1, d), s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        t = t + (a * s[p + "ls1.gamma"] if cfg.layer_scale else a)
        y = F.layer_norm(t, (d,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps=1e-6)
        if cfg.mlp == "gelu":
            u = F.gelu(F.linear(y, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"]))
            m = F.linear(u, s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
        elif cfg.mlp == "swiglu_packed":
            u, g = F.linear(y, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"]).chunk(2, -1)
            m = F.linear(F.silu(u) * g, s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
        else:
            g = F.silu(F.linear(y, s[p + "mlp.fc1_g.weight"], s[p + "mlp.fc1_g.bias"]))
            u = g * F.linear(y, s[p + "mlp.fc1_x.weight"], s[p + "mlp.fc1_x.bias"])
            m = F.linear(u, s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
        t = t + (m * s[p + "ls2.gamma"] if cfg.layer_scale else m)
    t = F.layer_norm(t, (d,), s["norm.weight"], s["norm.bias"], eps=1e-6)
    cls, patches = t[:, 0], t[:, 1 + cfg.num_registers:].mean(1)
    return {"cls": cls, "avg": patches, "cls+avg": torch.cat([cls, patches], -1)}[cfg.pool]


def timm_state(cfg: ViTConfig, seed: int) -> dict[str, torch.Tensor]:
    """A random state dict with timm's names (taken from a fresh model, all tensors re-drawn)."""
    torch.manual_seed(seed)
    state = {k: torch.randn_like(v) * 0.2 for k, v in ViT(cfg).model.state_dict().items()}
    state["head.weight"], state["head.bias"] = torch.randn(5, cfg.embed_dim), torch.zeros(5)   # ignored
    return state


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_timm_checkpoint_matches_reference(variant: str, tmp_path: Path) -> None:
    cfg = ViTConfig(**BASE, **VARIANTS[variant])
    state = timm_state(cfg, seed=len(variant))
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = ViT(cfg.model_copy(update={"weights": path})).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(state, cfg, x), atol=1e-5, rtol=1e-4)
    assert model.feature_dim == (32 if cfg.pool == "cls+avg" else 16) and len(model.weights_sha256) == 64


def test_prefixed_pth_and_resized_input(tmp_path: Path) -> None:
    cfg = ViTConfig(**BASE)
    torch.save({"model": {f"module.{k}": v for k, v in timm_state(cfg, 0).items()}}, tmp_path / "w.pth")
    model = ViT(cfg.model_copy(update={"weights": tmp_path / "w.pth"})).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 48, 48)).shape == (2, 16)        # pos_embed resampled to 6 x 6


def test_wrong_layout_lists_the_keys(tmp_path: Path) -> None:
    cfg = ViTConfig(**BASE)
    state = timm_state(cfg, 0)
    state["blocks.5.norm1.weight"] = torch.zeros(16)
    state.pop("blocks.1.ls2.gamma")
    save_file(state, str(tmp_path / "w.safetensors"))
    pattern = r"missing keys: blocks\.1\.ls2\.gamma.*unexpected keys: blocks\.5\.norm1\.weight"
    with pytest.raises(CheckpointError, match=pattern):
        ViT(cfg.model_copy(update={"weights": tmp_path / "w.safetensors"}))
