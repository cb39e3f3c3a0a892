"""CONCH v1 and v1.5 image towers (Mahmood Lab) in plain torch: a timm-named ViT trunk, one attentional
pooling query and a LayerNorm.

* ``conch-v1`` (Lu et al., Nat Med 2024): CoCa vision tower, ViT-B/16 at 448 px, OpenAI CLIP mean/std.
  Output: ``model.encode_image(x, proj_contrast=False, normalize=False)``, the 512-d embedding before the
  contrastive projection, which the CONCH README recommends for linear probes and MIL (and CLAM/TRIDENT
  extract). File: ``pytorch_model.bin`` (MahmoodLab/CONCH), the whole CoCa model with open_clip names:
  ``visual.trunk.*`` (timm ViT), ``visual.attn_pool_contrast.{query, attn.{q,k,v}_proj_weight,
  attn.in_proj_bias, attn.out_proj, ln_q, ln_k}`` (``nn.MultiheadAttention`` with kdim 768),
  ``visual.ln_contrast``; ``visual.proj_contrast``, the caption pooler, ``text.*``, ``text_decoder.*``
  and ``logit_scale`` are ignored.
* ``conch-v1.5`` (CONCH v1.5, TITAN's patch encoder, Ding et al., arXiv:2411.19666): ViT-L/16 with
  LayerScale, position embeddings for a 14 x 14 grid interpolated (DINO style) to
  the 448 px input, ImageNet mean/std, attentional pooler with bias-free ``to_q``/``to_kv``/``to_out`` -> 768-d after ``ln_contrast``.
  File: ``pytorch_model_vision.bin`` (MahmoodLab/conchv1_5): ``trunk.*``, ``attn_pool_contrast.*``,
  ``ln_contrast.*``.
"""

import math
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.config import ComponentConfig
from milkit.errors import CheckpointError
from milkit.extractor import IMAGENET_MEAN, IMAGENET_STD, EncoderCard, Extractor
from milkit.components.extractors.vit_core import VisionTransformer, ViTArch
from milkit.state_dict import load_checked, read_state_dict, sha256_file, strip_prefix

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ConchConfig(ComponentConfig):
    weights: Path | None = Field(None, description="The authors' checkpoint file, as distributed; None = random init.")
    img_size: int = Field(448, ge=16, description="Input side in pixels (CONCH v1 and v1.5: 448).")
    patch_size: int = Field(16, ge=1, description="ViT patch size.")
    embed_dim: int = Field(768, ge=8, description="Trunk width.")
    depth: int = Field(12, ge=1, description="Trunk blocks.")
    num_heads: int = Field(12, ge=1, description="Trunk attention heads.")
    pool_dim: int = Field(512, ge=8, description="Attentional pooler width = output width.")
    pool_heads: int = Field(8, ge=1, description="Attentional pooler heads.")

    @model_validator(mode="after")
    def _heads(self) -> "ConchConfig":
        if self.embed_dim % self.num_heads or self.pool_dim % self.pool_heads:
            raise ValueError("embed_dim / pool_dim must be divisible by num_heads / pool_heads")
        return self


class ConchV15Config(ConchConfig):
    embed_dim: int = Field(1024, ge=8, description="Trunk width (ViT-L: 1024).")
    depth: int = Field(24, ge=1, description="Trunk blocks (ViT-L: 24).")
    num_heads: int = Field(16, ge=1, description="Trunk attention heads (ViT-L: 16).")
    pool_dim: int = Field(768, ge=8, description="Attentional pooler width = output width (768).")
    pos_grid: int = Field(14, ge=1, description="Side of the trunk's position-embedding grid (224 / 16 = 14).")


class MHAPooler(nn.Module):
    """open_clip ``AttentionalPooler``: learned queries attend over LayerNormed tokens (CONCH v1)."""

    def __init__(self, dim: int, context: int, heads: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, dim))
        self.attn = nn.MultiheadAttention(dim, heads, kdim=context, vdim=context, batch_first=True)
        self.ln_q, self.ln_k = nn.LayerNorm(dim), nn.LayerNorm(context)

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln_k(x)                                                          # b n c
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)         # b 1 d
        return self.attn(q, x, x, need_weights=False)[0][:, 0]                    # b d


class LinearPooler(nn.Module):
    """CONCH v1.5's pooler: bias-free ``to_q``, ``to_kv``, ``to_out`` over LayerNormed query / tokens."""

    def __init__(self, dim: int, context: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, dim))
        self.ln_k, self.ln_q = nn.LayerNorm(context), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        h = self.heads
        q = self.to_q(self.ln_q(self.query)).view(1, 1, h, -1).transpose(1, 2).expand(b, -1, -1, -1)  # b h 1 k
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)
        k, v = (t.view(b, n, h, -1).transpose(1, 2) for t in (k, v))              # b h n k
        out = F.scaled_dot_product_attention(q, k, v)                             # b h 1 k
        return self.to_out(out.transpose(1, 2).reshape(b, -1))                    # b d


def trunk_tokens(vit: VisionTransformer, x: Tensor, pos: Tensor) -> Tensor:
    """timm ``forward_features`` (class token first, no registers): all tokens after the final norm."""
    t = vit.patch_embed(x)                                                        # b n d
    t = torch.cat([vit.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + pos
    for blk in vit.blocks:
        t = blk(t)
    return vit.norm(t)                                                            # b 1+n d


class ConchTower(nn.Module):
    def __init__(self, c: ConchConfig, *, v15: bool) -> None:
        super().__init__()
        self.v15 = v15
        self.patch = c.patch_size
        grid_px = c.pos_grid * c.patch_size if v15 else c.img_size
        self.trunk = VisionTransformer(ViTArch(
            img_size=grid_px, patch_size=c.patch_size, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
            mlp_hidden_dim=4 * c.embed_dim, layer_scale=v15))
        pooler = LinearPooler if v15 else MHAPooler
        self.attn_pool_contrast = pooler(c.pool_dim, c.embed_dim, c.pool_heads)
        self.ln_contrast = nn.LayerNorm(c.pool_dim)

    def _pos(self, gh: int, gw: int) -> Tensor:
        if not self.v15:
            return self.trunk._pos(gh, gw)
        pos = self.trunk.pos_embed                                                # 1 1+g*g d
        side = math.isqrt(pos.shape[1] - 1)
        if (gh, gw) == (side, side):
            return pos
        # the authors' interpolate_pos_encoding: bicubic with scale factors (g + 0.1) / side
        patch = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch.float(), scale_factor=((gh + 0.1) / side, (gw + 0.1) / side), mode="bicubic")
        patch = patch.permute(0, 2, 3, 1).reshape(1, gh * gw, -1).to(pos.dtype)
        return torch.cat([pos[:, :1], patch], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        tokens = trunk_tokens(self.trunk, x, self._pos(x.shape[-2] // self.patch, x.shape[-1] // self.patch))
        return self.ln_contrast(self.attn_pool_contrast(tokens))                  # b pool_dim


def resample_pos(pos: Tensor, side: int) -> Tensor:
    """timm ``resample_abs_pos_embed`` (bilinear, no antialias, class token kept), as the v1.5 loader does."""
    old = math.isqrt(pos.shape[1] - 1)
    patch = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    patch = F.interpolate(patch, size=(side, side), mode="bilinear", align_corners=False, antialias=False)
    return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, side * side, -1).to(pos.dtype)], dim=1)


class _Conch(Extractor):
    v15: ClassVar[bool]
    expected: ClassVar[str]

    def __init__(self, config: ConchConfig) -> None:
        super().__init__(config)
        self.visual = ConchTower(config, v15=self.v15)
        self.feature_dim = config.pool_dim
        self.tile_size_px = config.img_size
        self.mean, self.std = (IMAGENET_MEAN, IMAGENET_STD) if self.v15 else (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        if config.weights is not None:
            state = self._convert(strip_prefix(read_state_dict(config.weights), ("module.",)), config.weights)
            load_checked(self.visual, state, source=str(config.weights))
            self.weights_sha256 = sha256_file(config.weights)

    def _convert(self, state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, tiles: Tensor) -> Tensor:
        m = tiles.new_tensor(self.mean).view(1, 3, 1, 1)
        s = tiles.new_tensor(self.std).view(1, 3, 1, 1)
        return self.visual((tiles - m) / s)


class ConchV1(_Conch):
    """CONCH v1 image tower: 448 px, OpenAI CLIP mean/std, 512-d pre-projection embedding."""

    name: ClassVar[str] = "conch-v1"
    Config = ConchConfig
    v15 = False
    card: ClassVar[EncoderCard] = EncoderCard(
        model="CONCH (Lu et al., Nat Med 30:863-874, 2024): CoCa, ViT-B/16 image tower with attentional pooling",
        params=87_567_104,
        output="attentional-pooled contrastive query after ln_contrast, before proj_contrast, unnormalised (512); "
               "encode_image(proj_contrast=False, normalize=False)",
        input_px=448,
        patch_px=16,
        mpp=None,
        licence="CC-BY-NC-ND 4.0 (non-commercial, gated on Hugging Face)",
        weights="huggingface.co/MahmoodLab/CONCH: pytorch_model.bin (the whole CoCa model, open_clip names)",
    )

    def _convert(self, state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
        if not any(k.startswith("visual.") for k in state):
            hint = ("this looks like CONCH v1.5's pytorch_model_vision.bin (use conch-v1.5)"
                    if any(k.startswith("attn_pool_contrast.to_q") for k in state)
                    else "expected the whole CoCa model (visual.trunk.*, visual.attn_pool_contrast.*, text.*)")
            raise CheckpointError(f"weights {path} have no visual.* keys: {hint}")
        skip = ("proj_contrast", "attn_pool_caption.", "ln_caption.", "trunk.head.", "trunk.fc_norm.", "head.")
        return {k[7:]: v for k, v in state.items() if k.startswith("visual.") and not k[7:].startswith(skip)}


class ConchV15(_Conch):
    """CONCH v1.5 (TITAN's patch encoder): ViT-L/16 at 448 px, ImageNet mean/std, 768-d."""

    name: ClassVar[str] = "conch-v1.5"
    Config = ConchV15Config
    v15 = True
    card: ClassVar[EncoderCard] = EncoderCard(
        model="CONCH v1.5 (Ding et al., TITAN, arXiv:2411.19666, 2024): ViT-L/16 + attentional pooler, "
              "initialised from UNI and tuned on image-caption pairs",
        params=306_109_184,
        output="attentional-pooled query after ln_contrast, unnormalised (768): encode_image(proj_contrast=False, "
               "normalize=False), what TITAN's patch features are",
        input_px=448,
        patch_px=16,
        mpp=None,
        licence="CC-BY-NC-ND 4.0 (non-commercial, gated on Hugging Face)",
        weights="huggingface.co/MahmoodLab/conchv1_5: pytorch_model_vision.bin (trunk.*, attn_pool_contrast.*, "
                "ln_contrast.*)",
    )

    def _convert(self, state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
        if any(k.startswith("visual.trunk.") for k in state):
            raise CheckpointError(f"weights {path} are an open_clip CoCa model (visual.trunk.*): this looks like "
                                  "CONCH v1's pytorch_model.bin (use conch-v1)")
        state = strip_prefix(state, ("visual.",))
        state = {k: v for k, v in state.items() if not k.startswith(("trunk.head.", "trunk.fc_norm.", "head."))}
        side = self.visual.trunk.pos_embed.shape[1] - 1
        pos = state.get("trunk.pos_embed")
        square = pos is not None and pos.ndim == 3 and math.isqrt(pos.shape[1] - 1) ** 2 == pos.shape[1] - 1
        if square and pos.shape[1] != side + 1:
            state["trunk.pos_embed"] = resample_pos(pos, math.isqrt(side))
        return state
