"""CTransPath (Wang et al., Med Image Anal 2022): Swin-T with a convolutional stem, in plain torch.

Parameter names follow timm 0.5.4's ``SwinTransformer`` as the authors' ``ctranspath.pth`` stores
them (``{"model": state_dict}``): ``patch_embed.proj.{0,1,3,4,6}`` (ConvStem: two 3x3/2 conv-BN-ReLU
and a 1x1 conv), ``patch_embed.norm``, ``layers.I.blocks.J.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``, ``layers.I.downsample.{norm,
reduction}`` (timm 0.5.4 merges patches at the *end* of stages 0-2), ``norm``. The buffers
``relative_position_index`` and ``attn_mask`` in the file are recomputed here and ignored, as is
``head.*``. The feature is the mean over the last stage's tokens after the final LayerNorm (768).
"""

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.config import ComponentConfig
from milkit.errors import CheckpointError
from milkit.extractor import IMAGENET_MEAN, IMAGENET_STD, EncoderCard, Extractor
from milkit.state_dict import load_checked, read_state_dict, sha256_file, strip_prefix

BUFFERS = ("relative_position_index", "attn_mask")


class SwinConfig(ComponentConfig):
    weights: Path | None = Field(
        None, description="CTransPath checkpoint (the authors' ctranspath.pth, {'model': ...}); None = random init.")
    img_size: int = Field(224, ge=32, description="Input side in pixels (CTransPath: 224; tiles are resized to it).")
    embed_dim: int = Field(96, ge=8, description="Stage-0 width (Swin-T: 96; must be divisible by 8 for the ConvStem).")
    depths: tuple[int, ...] = Field((2, 2, 6, 2), description="Blocks per stage (Swin-T: 2, 2, 6, 2).")
    num_heads: tuple[int, ...] = Field((3, 6, 12, 24), description="Attention heads per stage (Swin-T: 3, 6, 12, 24).")
    window_size: int = Field(7, ge=1, description="Attention window side (Swin-T: 7).")

    @model_validator(mode="after")
    def _shape(self) -> "SwinConfig":
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        if self.embed_dim % 8:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by 8 (ConvStem)")
        for i, h in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % h:
                raise ValueError(f"stage {i} width {self.embed_dim * 2**i} is not divisible by {h} heads")
        if self.img_size % (4 * 2 ** (len(self.depths) - 1)):
            raise ValueError(f"img_size {self.img_size} is not divisible by {4 * 2 ** (len(self.depths) - 1)}")
        for i in range(len(self.depths)):
            res = self.img_size // 4 // 2**i
            if res > self.window_size and res % self.window_size:
                raise ValueError(f"stage {i}'s {res} x {res} tokens do not tile into {self.window_size}-windows")
        return self


class ConvStem(nn.Module):
    """CTransPath's stem: conv3x3/2-BN-ReLU (dim/8), conv3x3/2-BN-ReLU (dim/4), conv1x1 (dim), LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        c1, c2 = dim // 8, dim // 4
        self.proj = nn.Sequential(
            nn.Conv2d(3, c1, 3, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
            nn.Conv2d(c2, dim, 1))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))                 # b (h/4 w/4) d


def window_partition(x: Tensor, w: int) -> Tensor:
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)                                                # (b nw) w*w c


def window_reverse(x: Tensor, w: int, h: int, wd: int) -> Tensor:
    b = x.shape[0] // ((h // w) * (wd // w))
    x = x.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, -1)                                                # b h w c


def relative_position_index(w: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)  # 2 n
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)   # n n 2
    return rel[..., 0] * (2 * w - 1) + rel[..., 1]                                # n n


def shift_mask(h: int, wd: int, w: int, s: int) -> Tensor:
    """timm's additive mask (0 / -100) keeping shifted windows from mixing regions: [nw, n, n]."""
    img = torch.zeros(1, h, wd, 1)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, w).squeeze(-1)                                    # nw n
    mask = win[:, None, :] - win[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, w: int) -> None:
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(w), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # bw h n k
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)                               # h n n
        if mask is not None:                                                      # nw n n -> (b nw) h n n
            nw = mask.shape[0]
            bias = (bias[None, None] + mask[None, :, None]).expand(bw // nw, -1, -1, -1, -1).reshape(bw, -1, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # bw h n k
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, res: int, w: int, shift: bool) -> None:
        super().__init__()
        if res <= w:                                   # timm: one window covers the map, no shift
            w, shift = res, False
        self.res, self.w, self.s = res, w, (w // 2 if shift else 0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, w)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        mask = shift_mask(res, res, w, self.s) if self.s else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        r, w, s = self.res, self.w, self.s
        y = self.norm1(x).view(b, r, r, c)
        if s:
            y = torch.roll(y, (-s, -s), (1, 2))
        y = window_reverse(self.attn(window_partition(y, w), self.attn_mask), w, r, r)
        if s:
            y = torch.roll(y, (s, s), (1, 2))
        x = x + y.reshape(b, r * r, c)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, res: int) -> None:
        super().__init__()
        self.res = res
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, self.res, self.res, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)  # b r/2 r/2 4c
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))                 # b (r/2)^2 2c


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, res: int, w: int, merge: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, res, w, shift=j % 2 == 1) for j in range(depth))
        self.downsample = PatchMerging(dim, res) if merge else None

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class SwinTransformer(nn.Module):
    """Normalised image [b, 3, s, s] -> mean of the last stage's normed tokens [b, 8 * embed_dim]."""

    def __init__(self, c: SwinConfig) -> None:
        super().__init__()
        self.img_size = c.img_size
        self.patch_embed = ConvStem(c.embed_dim)
        n = len(c.depths)
        self.layers = nn.ModuleList(
            SwinStage(c.embed_dim * 2**i, c.depths[i], c.num_heads[i], c.img_size // 4 // 2**i, c.window_size,
                      merge=i < n - 1)
            for i in range(n))
        self.out_dim = c.embed_dim * 2 ** (n - 1)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"Swin expects {self.img_size} x {self.img_size} inputs, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)                                                   # b (s/4)^2 d
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).mean(1)                                               # b 8d


class CTransPath(Extractor):
    """CTransPath: Swin-T (timm ``swin_tiny_patch4_window7_224``) whose patch embedding is a
    convolutional stem, pretrained with semantically-relevant contrastive learning on ~15M TCGA/PAIP
    tiles. 224 px, ImageNet mean/std, 768-d (mean token of the last stage; the head is removed)."""

    name: ClassVar[str] = "ctranspath"
    Config = SwinConfig
    card: ClassVar[EncoderCard] = EncoderCard(
        model="CTransPath (Wang et al., Med Image Anal 81:102559, 2022): Swin-T with a convolutional stem, SRCL",
        params=27_520_038,
        output="mean of the last stage's tokens after the final LayerNorm (768)",
        input_px=224,
        patch_px=None,
        mpp=None,
        licence="not stated with the weights; see github.com/Xiyue-Wang/TransPath",
        weights="ctranspath.pth from the Google Drive link in github.com/Xiyue-Wang/TransPath ({'model': state_dict}, "
                "timm 0.5.4 names); TRIDENT's CHIEF_CTransPath.pth has the same layout",
    )

    def __init__(self, config: SwinConfig) -> None:
        super().__init__(config)
        self.model = SwinTransformer(config)
        self.feature_dim = self.model.out_dim
        self.tile_size_px = config.img_size
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        if config.weights is not None:
            load_ctranspath(self.model, config.weights)
            self.weights_sha256 = sha256_file(config.weights)

    def forward(self, tiles: Tensor) -> Tensor:
        m = tiles.new_tensor(self.mean).view(1, 3, 1, 1)
        s = tiles.new_tensor(self.std).view(1, 3, 1, 1)
        return self.model((tiles - m) / s)                                        # b 768


def load_ctranspath(model: SwinTransformer, path: Path) -> None:
    state = strip_prefix(read_state_dict(path), ("module.", "backbone."))
    state = {k: v for k, v in state.items() if not k.endswith(BUFFERS) and not k.startswith("head.")}
    if "patch_embed.proj.weight" in state:
        raise CheckpointError(
            f"weights {path} have a plain Swin patch embedding (patch_embed.proj.weight, a 4x4 conv), not "
            "CTransPath's convolutional stem (patch_embed.proj.0/1/3/4/6): this is an ImageNet Swin-T "
            "checkpoint, not ctranspath.pth")
    last = len(model.layers) - 1
    if any(k.startswith(f"layers.{last}.downsample.") for k in state):
        raise CheckpointError(
            f"weights {path} merge patches at the start of stages 1-{last} (layers.{last}.downsample.*: timm >= 0.9 "
            f"names), CTransPath's timm 0.5.4 layout merges at the end of stages 0-{last - 1}; use the authors' "
            "ctranspath.pth as distributed")
    load_checked(model, state, source=str(path))
