"""PLIP (Huang et al., Nat Med 2023): the CLIP ViT-B/32 image tower fine-tuned on OpenPath, in plain torch.

Parameter names follow Hugging Face ``CLIPVisionModel`` + ``visual_projection`` as ``vinid/plip``'s
``CLIPModel`` checkpoint stores them: ``vision_model.embeddings.{class_embedding,
patch_embedding.weight, position_embedding.weight}``, ``vision_model.pre_layrnorm`` (sic),
``vision_model.encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1,
mlp.fc2}``, ``vision_model.post_layernorm``, ``visual_projection.weight``. ``text_model.*``,
``text_projection.*``, ``logit_scale`` and the ``position_ids`` buffer are ignored. The feature is
``CLIPModel.get_image_features``: the projected class token (512), as PLIP's ``encode_images``.
"""

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.config import ComponentConfig
from milkit.errors import CheckpointError
from milkit.extractor import EncoderCard, Extractor
from milkit.state_dict import load_checked, read_state_dict, sha256_file, strip_prefix

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class PLIPConfig(ComponentConfig):
    weights: Path | None = Field(
        None, description="vinid/plip pytorch_model.bin or model.safetensors (HF CLIPModel); None = random init.")
    img_size: int = Field(224, ge=16, description="Input side in pixels (PLIP: 224).")
    patch_size: int = Field(32, ge=1, description="Patch size (ViT-B/32).")
    width: int = Field(768, ge=8, description="Token width.")
    layers: int = Field(12, ge=1, description="Transformer layers.")
    heads: int = Field(12, ge=1, description="Attention heads.")
    projection_dim: int = Field(512, ge=1, description="visual_projection output width = feature width.")

    @model_validator(mode="after")
    def _heads(self) -> "PLIPConfig":
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return self


def quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


class CLIPAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)                             # b h n k
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class CLIPMLP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class CLIPLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.layer_norm1, self.self_attn = nn.LayerNorm(dim), CLIPAttention(dim, heads)
        self.layer_norm2, self.mlp = nn.LayerNorm(dim), CLIPMLP(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, c: PLIPConfig) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(c.width) * 0.02)
        self.patch_embedding = nn.Conv2d(3, c.width, c.patch_size, c.patch_size, bias=False)
        self.position_embedding = nn.Embedding((c.img_size // c.patch_size) ** 2 + 1, c.width)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch_embedding(x).flatten(2).transpose(1, 2)                    # b n d
        if t.shape[1] + 1 != self.position_embedding.num_embeddings:
            raise ValueError(f"PLIP expects {self.position_embedding.num_embeddings - 1} patches, got {t.shape[1]}")
        cls = self.class_embedding.to(t.dtype).expand(t.shape[0], 1, -1)
        return torch.cat([cls, t], dim=1) + self.position_embedding.weight        # b 1+n d


class CLIPVisionTransformer(nn.Module):
    def __init__(self, c: PLIPConfig) -> None:
        super().__init__()
        self.embeddings = CLIPEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c.width)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(CLIPLayer(c.width, c.heads) for _ in range(c.layers))
        self.post_layernorm = nn.LayerNorm(c.width)

    def forward(self, x: Tensor) -> Tensor:
        t = self.pre_layrnorm(self.embeddings(x))
        for layer in self.encoder.layers:
            t = layer(t)
        return self.post_layernorm(t[:, 0])                                       # b d (pooler_output)


class PLIPTower(nn.Module):
    def __init__(self, c: PLIPConfig) -> None:
        super().__init__()
        self.vision_model = CLIPVisionTransformer(c)
        self.visual_projection = nn.Linear(c.width, c.projection_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.visual_projection(self.vision_model(x))                      # b projection_dim


class PLIP(Extractor):
    """PLIP image tower: 224 px, CLIP mean/std, projected 512-d image embedding (unnormalised)."""

    name: ClassVar[str] = "plip"
    Config = PLIPConfig
    card: ClassVar[EncoderCard] = EncoderCard(
        model="PLIP (Huang et al., Nat Med 29:2307-2316, 2023): CLIP ViT-B/32 fine-tuned on OpenPath "
              "(208,414 image-text pairs from medical Twitter)",
        params=87_849_216,
        output="visual_projection of the post-LayerNorm class token, unnormalised (512): CLIPModel.get_image_features",
        input_px=224,
        patch_px=32,
        mpp=None,
        licence="not stated with the weights (vinid/plip); OpenPath data terms restrict use to research",
        weights="huggingface.co/vinid/plip: pytorch_model.bin (HF CLIPModel; the vision tower and visual_projection "
                "are used)",
    )

    def __init__(self, config: PLIPConfig) -> None:
        super().__init__(config)
        self.model = PLIPTower(config)
        self.feature_dim = config.projection_dim
        self.tile_size_px = config.img_size
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        if config.weights is not None:
            load_checked(self.model, convert_hf_clip(read_state_dict(config.weights), config.weights),
                         source=str(config.weights))
            self.weights_sha256 = sha256_file(config.weights)

    def forward(self, tiles: Tensor) -> Tensor:
        m = tiles.new_tensor(self.mean).view(1, 3, 1, 1)
        s = tiles.new_tensor(self.std).view(1, 3, 1, 1)
        return self.model((tiles - m) / s)                                        # b 512


def convert_hf_clip(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Keep the HF CLIP vision tower and ``visual_projection``; refuse other CLIP layouts with the reason."""
    state = strip_prefix(state, ("module.", "model."))
    if any(k.startswith(("visual.transformer.", "visual.conv1.")) for k in state):
        raise CheckpointError(f"weights {path} are an OpenAI/open_clip CLIP checkpoint (visual.transformer.*, "
                              "visual.conv1.*), not Hugging Face CLIPModel names (vision_model.*); use vinid/plip's "
                              "pytorch_model.bin as distributed")
    if not any(k.startswith("vision_model.") for k in state):
        raise CheckpointError(f"weights {path} have no vision_model.* keys: expected a Hugging Face CLIPModel or "
                              "CLIPVisionModelWithProjection checkpoint (vinid/plip)")
    if "visual_projection.weight" not in state:
        raise CheckpointError(f"weights {path} lack visual_projection.weight: a CLIPVisionModel without the "
                              "projection gives no 512-d PLIP embedding; use the full CLIPModel file")
    return {k: v for k, v in state.items()
            if k.startswith(("vision_model.", "visual_projection.")) and not k.endswith("position_ids")}
