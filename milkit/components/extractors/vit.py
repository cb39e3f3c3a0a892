"""Generic ViT patch encoder loading timm-format state dicts (UNI, Virchow, H-optimus, DINOv2-timm, ...)."""

from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator
from torch import Tensor

from milkit.config import ComponentConfig
from milkit.extractor import IMAGENET_MEAN, IMAGENET_STD, Extractor
from milkit.components.extractors.vit_core import MlpKind, PoolKind, VisionTransformer, ViTArch
from milkit.state_dict import load_checked, read_state_dict, sha256_file, strip_prefix


class ViTConfig(ComponentConfig):
    weights: Path | None = Field(
        None, description="Local timm-format checkpoint (.safetensors/.pth/.bin); None = random init.")
    img_size: int = Field(224, ge=16, description="Input side in pixels (tiles are resized to it).")
    patch_size: int = Field(16, ge=1, description="ViT patch size.")
    embed_dim: int = Field(1024, ge=8, description="Token width.")
    depth: int = Field(24, ge=1, description="Number of transformer blocks.")
    num_heads: int = Field(16, ge=1, description="Attention heads.")
    mlp_ratio: float = Field(
        4.0, gt=0, description="MLP hidden width / embed_dim (timm convention; packed SwiGLU counts both halves).")
    mlp: MlpKind = Field(
        "gelu", description="gelu (Mlp), swiglu_packed (timm SwiGLUPacked/GluMlp) or swiglu (timm SwiGLU).")
    num_registers: int = Field(0, ge=0, description="Register tokens (timm reg_token).")
    layer_scale: bool = Field(True, description="LayerScale (ls1/ls2.gamma) in every block.")
    qkv_bias: bool = Field(True, description="Bias in the qkv projection.")
    no_embed_class: bool = Field(False, description="pos_embed covers patch tokens only (timm no_embed_class).")
    norm_eps: float = Field(1e-6, gt=0, description="LayerNorm epsilon.")
    pool: PoolKind = Field("cls", description="cls (UNI), avg (mean patch token) or cls+avg (Virchow, 2x width).")
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="Normalisation mean (RGB).")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="Normalisation std (RGB).")

    @model_validator(mode="after")
    def _heads(self) -> "ViTConfig":
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        return self


class ViT(Extractor):
    """Vision Transformer with timm's parameter names (``patch_embed.proj``, ``cls_token``,
    ``reg_token``, ``pos_embed``, ``blocks.N.attn.qkv``, ``blocks.N.ls1.gamma``, ``norm``).
    ``head.*`` keys in the file are ignored; anything else missing or extra is an error."""

    name: ClassVar[str] = "vit"
    Config = ViTConfig

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        arch = ViTArch(
            img_size=config.img_size, patch_size=config.patch_size, embed_dim=config.embed_dim,
            depth=config.depth, num_heads=config.num_heads, mlp_hidden_dim=int(config.embed_dim * config.mlp_ratio),
            mlp=config.mlp, num_registers=config.num_registers, layer_scale=config.layer_scale,
            qkv_bias=config.qkv_bias, no_embed_class=config.no_embed_class, norm_eps=config.norm_eps,
            pool=config.pool,
        )
        self.model = VisionTransformer(arch)
        self.feature_dim = self.model.out_dim
        self.tile_size_px = config.img_size
        self.mean, self.std = tuple(config.mean), tuple(config.std)
        if config.weights is not None:
            state = strip_prefix(read_state_dict(config.weights), ("module.", "model.", "backbone.", "trunk."))
            load_checked(self.model, state, source=str(config.weights), ignore=("head.", "fc_norm.", "head_drop."))
            self.weights_sha256 = sha256_file(config.weights)

    def forward(self, tiles: Tensor) -> Tensor:
        m = tiles.new_tensor(self.mean).view(1, 3, 1, 1)
        s = tiles.new_tensor(self.std).view(1, 3, 1, 1)
        return self.model((tiles - m) / s)                                  # b d
