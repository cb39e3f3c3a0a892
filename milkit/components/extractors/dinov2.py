"""DINOv2 ViT-L/14 loading facebookresearch/dinov2 (HistGen ``dinov2_cpath_v1.pth``) checkpoints."""

import re
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from milkit.config import ComponentConfig
from milkit.errors import CheckpointError
from milkit.extractor import IMAGENET_MEAN, IMAGENET_STD, Extractor
from milkit.components.extractors.vit_core import VisionTransformer, ViTArch
from milkit.state_dict import load_checked, read_state_dict, sha256_file

CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


class DINOv2Config(ComponentConfig):
    weights: Path | None = Field(
        None, description="DINOv2 checkpoint (teacher_checkpoint.pth, dinov2_cpath_v1.pth); None = random init.")
    img_size: int = Field(224, ge=14, description="Input side; HistGen uses 224 (16 x 16 patches).")
    patch_size: int = Field(14, ge=1, description="Patch size.")
    embed_dim: int = Field(1024, ge=8, description="Token width (ViT-L: 1024).")
    depth: int = Field(24, ge=1, description="Blocks (ViT-L: 24).")
    num_heads: int = Field(16, ge=1, description="Attention heads (ViT-L: 16).")
    num_registers: int = Field(0, ge=0, description="Register tokens (0 for HistGen's checkpoint).")


def swiglu_hidden(dim: int) -> int:
    """DINOv2 ``SwiGLUFFNFused`` hidden width for mlp_ratio 4: 2/3 of 4*dim rounded up to 8 (1024 -> 2736)."""
    return (int(4 * dim * 2 / 3) + 7) // 8 * 8


def convert_dinov2_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """DINOv2 key layout -> milkit/timm layout.

    Unwraps ``backbone.`` (teacher checkpoint), flattens ``block_chunks`` (``blocks.<chunk>.<i>.`` ->
    ``blocks.<i>.``), renames the fused SwiGLU (``mlp.w12``/``mlp.w3`` -> ``mlp.fc1``/``mlp.fc2``) and
    ``register_tokens`` -> ``reg_token``, drops ``mask_token`` and the DINO/iBOT heads, and folds the
    class-token position into ``cls_token`` (DINOv2 adds no position to registers).
    """
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "mask_token" or key.startswith(("dino_head.", "ibot_head.", "head.")):
            continue
        key = CHUNKED.sub(r"blocks.\1.", key)
        key = key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        out["reg_token" if key == "register_tokens" else key] = value
    if "pos_embed" in out and "cls_token" in out:
        pos = out["pos_embed"]
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    return out


class DINOv2ViTL14(Extractor):
    """DINOv2 ViT-L/14 (Oquab et al., 2023, arXiv:2304.07193) as HistGen extracts it: fused SwiGLU
    FFN, LayerScale, qkv/proj/ffn biases, LayerNorm eps 1e-6, output = CLS after the final norm (1024-d).
    Smaller sizes are accepted for tests."""

    name: ClassVar[str] = "dinov2-vitl14"
    Config = DINOv2Config

    def __init__(self, config: DINOv2Config) -> None:
        super().__init__(config)
        if config.embed_dim % config.num_heads:
            raise CheckpointError(f"embed_dim {config.embed_dim} is not divisible by num_heads {config.num_heads}")
        arch = ViTArch(
            img_size=config.img_size, patch_size=config.patch_size, embed_dim=config.embed_dim, depth=config.depth,
            num_heads=config.num_heads, mlp_hidden_dim=2 * swiglu_hidden(config.embed_dim), mlp="swiglu_packed",
            num_registers=config.num_registers, layer_scale=True, no_embed_class=True, pool="cls",
        )
        self.model = VisionTransformer(arch)
        self.feature_dim = config.embed_dim
        self.tile_size_px = config.img_size
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        if config.weights is not None:
            raw = read_state_dict(config.weights)
            load_checked(self.model, convert_dinov2_state(raw), source=str(config.weights))
            self.weights_sha256 = sha256_file(config.weights)

    def forward(self, tiles: Tensor) -> Tensor:
        m = torch.tensor(self.mean, device=tiles.device, dtype=tiles.dtype).view(1, 3, 1, 1)
        s = torch.tensor(self.std, device=tiles.device, dtype=tiles.dtype).view(1, 3, 1, 1)
        return self.model((tiles - m) / s)                                  # b d
