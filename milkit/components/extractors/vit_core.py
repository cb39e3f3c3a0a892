"""A plain-torch Vision Transformer whose parameter names follow timm's ``VisionTransformer``.

Covers the pathology foundation-model family: CLS (+ optional register) tokens, learned absolute
position embeddings (with or without class-token positions), LayerScale, GELU or SwiGLU MLPs,
final LayerNorm, CLS / mean / CLS+mean pooling.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MlpKind = Literal["gelu", "swiglu_packed", "swiglu"]
PoolKind = Literal["cls", "avg", "cls+avg"]


@dataclass(frozen=True)
class ViTArch:
    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden_dim: int = 3072       # fc1 output width (for swiglu_packed: both halves together)
    mlp: MlpKind = "gelu"
    num_registers: int = 0
    layer_scale: bool = False
    qkv_bias: bool = True
    no_embed_class: bool = False     # pos_embed covers patch tokens only
    norm_eps: float = 1e-6
    pool: PoolKind = "cls"


class Mlp(nn.Module):
    """timm ``Mlp`` (fc1 -> GELU -> fc2), ``GluMlp`` packed SwiGLU (fc1 -> silu(a) * b -> fc2) or
    ``SwiGLU`` (silu(fc1_g) * fc1_x -> fc2)."""

    def __init__(self, dim: int, hidden: int, kind: MlpKind) -> None:
        super().__init__()
        self.kind = kind
        if kind == "swiglu":
            self.fc1_g, self.fc1_x = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
        else:
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden // 2 if kind == "swiglu_packed" else hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "gelu":
            return self.fc2(F.gelu(self.fc1(x)))
        if self.kind == "swiglu_packed":
            a, b = self.fc1(x).chunk(2, dim=-1)
            return self.fc2(F.silu(a) * b)
        return self.fc2(F.silu(self.fc1_g(x)) * self.fc1_x(x))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 b h n k
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])                          # b h n k
        return self.proj(out.transpose(1, 2).reshape(b, n, d))                                # b n d


class Block(nn.Module):
    def __init__(self, a: ViTArch) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(a.embed_dim, eps=a.norm_eps)
        self.attn = Attention(a.embed_dim, a.num_heads, a.qkv_bias)
        self.ls1 = LayerScale(a.embed_dim) if a.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(a.embed_dim, eps=a.norm_eps)
        self.mlp = Mlp(a.embed_dim, a.mlp_hidden_dim, a.mlp)
        self.ls2 = LayerScale(a.embed_dim) if a.layer_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)                  # b n d


class VisionTransformer(nn.Module):
    """Image [b, 3, h, w] (normalised) -> pooled features [b, out_dim]."""

    def __init__(self, a: ViTArch) -> None:
        super().__init__()
        self.arch = a
        grid = a.img_size // a.patch_size
        self.num_prefix = 1 + a.num_registers
        self.patch_embed = PatchEmbed(a.patch_size, a.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, a.embed_dim))
        self.reg_token = nn.Parameter(torch.zeros(1, a.num_registers, a.embed_dim)) if a.num_registers else None
        length = grid * grid + (0 if a.no_embed_class else self.num_prefix)
        self.pos_embed = nn.Parameter(torch.randn(1, length, a.embed_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.depth))
        self.norm = nn.LayerNorm(a.embed_dim, eps=a.norm_eps)
        self.out_dim = a.embed_dim * (2 if a.pool == "cls+avg" else 1)

    def _pos(self, grid_h: int, grid_w: int) -> Tensor:
        """Position embeddings, bicubically resampled when the token grid differs from training."""
        pos = self.pos_embed
        n_pre = 0 if self.arch.no_embed_class else self.num_prefix
        prefix, patch = pos[:, :n_pre], pos[:, n_pre:]
        side = int(math.sqrt(patch.shape[1]))
        if (grid_h, grid_w) != (side, side):
            patch = patch.reshape(1, side, side, -1).permute(0, 3, 1, 2)                    # 1 d s s
            patch = F.interpolate(patch.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
            patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1).to(pos.dtype)  # 1 n d
        return torch.cat([prefix, patch], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        gh, gw = x.shape[-2] // self.arch.patch_size, x.shape[-1] // self.arch.patch_size
        tokens = self.patch_embed(x)                                                       # b n d
        prefix = [self.cls_token.expand(b, -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(b, -1, -1))
        pos = self._pos(gh, gw)
        if self.arch.no_embed_class:
            tokens = torch.cat([*prefix, tokens + pos], dim=1)                             # b p+n d
        else:
            tokens = torch.cat([*prefix, tokens], dim=1) + pos
        for blk in self.blocks:
            tokens = blk(tokens)
        tokens = self.norm(tokens)
        cls, patches = tokens[:, 0], tokens[:, self.num_prefix:]
        if self.arch.pool == "cls":
            return cls
        if self.arch.pool == "avg":
            return patches.mean(1)
        return torch.cat([cls, patches.mean(1)], dim=-1)                                   # b 2d
