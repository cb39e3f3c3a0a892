"""Prov-GigaPath's slide encoder (Xu et al., "A whole-slide foundation model for digital pathology from
real-world data", Nature 630:181-188, 2024): a LongNet (dilated attention) over Prov-GigaPath tile embeddings
with a fixed 2D sin-cos position embedding of each tile's grid position.

Reference code: prov-gigapath/prov-gigapath ``gigapath/slide_encoder.py`` (``LongNetViT``, ``PatchEmbed``,
``gigapath_slide_enc12l768d``, ``get_optimal_segment_length``, ``coords_to_pos``), ``gigapath/pos_embed.py``
(``get_2d_sincos_pos_embed``), ``gigapath/torchscale/model/LongNet.py`` (``make_longnet_from_name``: dilations
[1, 2, 4, 8, 16]) and ``LongNetConfig.py`` (``LongNet_12_layers_768_dim``), ``gigapath/torchscale/architecture/
encoder.py`` (``EncoderLayer``, ``Encoder``) with microsoft/torchscale's ``EncoderConfig`` defaults (``subln``,
pre-norm, LayerNorm eps 1e-5), ``FeedForwardNetwork`` and ``DilatedAttention`` (milkit/nn/dilated_attention.py);
``gigapath/classification_head.py`` and ``finetune/params.py`` / ``scripts/run_panda.sh`` (the authors'
fine-tuning: layer 11's states, the class token, dropout 0.1, drop path 0). Differences: docs/aggregators.md.
"""

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput, FeatureSpec
from milkit.components.aggregators.slide_encoder import SlideEncoder, SlideEncoderConfig
from milkit.nn.dilated_attention import DilatedAttention
from milkit.nn.patch_grid import grid_cells, sincos_2d


class GigaPathSlideConfig(SlideEncoderConfig):
    embed_dim: int = Field(768, gt=0, description="Token width (gigapath_slide_enc12l768d).")
    depth: int = Field(12, gt=0, description="LongNet layers in the published model (LongNet_12_layers_768_dim).")
    num_heads: int = Field(16, gt=0, description="Attention heads (LongNet_12_layers_768_dim).")
    ffn_dim: int = Field(3072, gt=0, description="Feed-forward width (encoder_ffn_embed_dim).")
    segment_lengths: list[int] = Field(
        [1024, 5792, 32768, 185363, 1048576], min_length=1, description="Dilated-attention segment lengths: "
        "LongNetViT.get_optimal_segment_length(max_wsi_size=262144, tile_size=256).")
    dilations: list[int] = Field([1, 2, 4, 8, 16], min_length=1, description="Dilation of each segment length "
                                 "(make_longnet_from_name's dilated_ratio).")
    slide_ngrids: int = Field(1000, gt=0, description="Side of the position grid (LongNetViT.slide_ngrids).")
    feat_layer: int | None = Field(
        11, ge=1, description="Read the slide embedding after this layer (1..depth), as the authors' fine-tuning "
        "(feat_layer 11 of all_layer_embed); later layers are not built. None: after all layers and the encoder's "
        "final LayerNorm (LongNetViT.forward's default).")
    global_pool: bool = Field(False, description="Mean of the tile tokens instead of the class token (the "
                              "authors' fine-tuning: class token; TRIDENT: global pool).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the embedding, attention and FFN "
                           "outputs (run_panda.sh DROPOUT).")
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Stochastic depth, linear over the depth "
                                  "layers (run_panda.sh --drop_path_rate 0.0).")
    patch_size_level0: int | None = Field(
        None, gt=0, description="Tile side in level-0 px (its 256-px 0.5-mpp tiles: 256 at 20x, 512 at 40x); "
                                "None = each bag's smallest coordinate spacing (tiles cut edge to edge).")

    @model_validator(mode="after")
    def _check(self) -> "GigaPathSlideConfig":
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads and by 4")
        if len(self.segment_lengths) != len(self.dilations):
            raise ValueError("segment_lengths and dilations must have the same length")
        if self.feat_layer is not None and self.feat_layer > self.depth:
            raise ValueError(f"feat_layer ({self.feat_layer}) must be at most depth ({self.depth})")
        return self


class LongNetLayer(nn.Module):
    """torchscale's pre-norm ``EncoderLayer``: x + drop_path(dropout(attn(LN x))); x + drop_path(ffn(LN x)),
    the FFN fc1 -> GELU (in float32) -> sub-LayerNorm -> fc2 -> dropout."""

    def __init__(self, c: GigaPathSlideConfig, drop_path: float) -> None:
        super().__init__()
        self.self_attn = DilatedAttention(c.embed_dim, c.num_heads, c.segment_lengths, c.dilations)
        self.self_attn_layer_norm, self.final_layer_norm = nn.LayerNorm(c.embed_dim), nn.LayerNorm(c.embed_dim)
        self.ffn = nn.ModuleDict({"fc1": nn.Linear(c.embed_dim, c.ffn_dim), "ffn_layernorm": nn.LayerNorm(c.ffn_dim),
                                  "fc2": nn.Linear(c.ffn_dim, c.embed_dim)})
        self.dropout, self.drop_path = nn.Dropout(c.dropout), drop_path

    def forward(self, x: Tensor) -> Tensor:
        x = x + self._drop_path(self.dropout(self.self_attn(self.self_attn_layer_norm(x))))
        h = F.gelu(self.ffn["fc1"](self.final_layer_norm(x)).float()).type_as(x)
        return x + self._drop_path(self.dropout(self.ffn["fc2"](self.ffn["ffn_layernorm"](h))))

    def _drop_path(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_path == 0:
            return x
        keep = x.new_empty(x.shape[0], *(1,) * (x.ndim - 1)).bernoulli_(1 - self.drop_path)   # b 1 1
        return x * keep / (1 - self.drop_path)


class GigaPathSlide(SlideEncoder):
    """Prov-GigaPath slide encoder (Xu et al., 2024): tile embeddings + 2D sin-cos positions -> LongNet.

    Per bag: Linear(1536 -> 768) of each tile, plus the sin-cos embedding of its grid position
    ``x_cell * slide_ngrids + y_cell`` (cells ``floor(coords / patch_size_level0)``); a class token;
    dropout; the first ``feat_layer`` LongNet layers, each dilated attention (segment lengths and dilations
    of the published model) and a sub-LayerNorm FFN; the class token (or the tiles' mean) through the final
    LayerNorm (eps 1e-6): ``embedding`` [B, 768]. No per-patch attention. Bags are encoded one at a time over
    their real tiles, as the reference (batch size 1).
    """

    name = "gigapath-slide"
    Config = GigaPathSlideConfig
    returns_attention = False
    permutation_invariant = False  # dilated segments follow the tiles' order (milkit extract: row-major)
    expected_features = FeatureSpec(encoders=("gigapath",), dim=1536)

    def __init__(self, config: GigaPathSlideConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        c, e = config, config.embed_dim
        self.out_dim = e
        self.patch_embed = nn.ModuleDict({"proj": nn.Linear(in_dim, e)})
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        rate = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]  # np.linspace(0, rate, depth)
        layers = nn.ModuleList(LongNetLayer(c, rate[i]) for i in range(c.feat_layer or c.depth))
        self.encoder = nn.ModuleDict({"layers": layers} | ({} if c.feat_layer else {"layer_norm": nn.LayerNorm(e)}))
        self.dropout, self.norm = nn.Dropout(c.dropout), nn.LayerNorm(e, eps=1e-6)
        self.reset_parameters()
        unused = ([f"encoder.layers.{i}." for i in range(c.feat_layer, c.depth)] + ["encoder.layer_norm."]
                  if c.feat_layer else [])                                      # in the file, unused here
        fixed = ["pos_embed"]                   # the sin-cos table, recomputed (not persistent in the reference)
        self.load_published(self, ignore=unused + fixed, expects="slide_encoder.pth of huggingface.co/prov-gigapath/"
                            "prov-gigapath (gigapath_slide_enc12l768d, {'model': state dict})")

    def reset_parameters(self) -> None:
        """As ``LongNetViT.initialize_vit_weights``: xavier-uniform Linear weights, zero biases, class token
        N(0, 0.02)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        bags = [self._one_bag(bag[real], xy[real]) for bag, real, xy in zip(feats, mask, coords)]  # one at a time
        return AggregatorOutput(embedding=torch.stack(bags))

    def _one_bag(self, feats: Tensor, coords: Tensor) -> Tensor:
        """feats [n, D], coords [n, 2] of one bag -> embedding [E]."""
        c = self.config
        cells = grid_cells(coords, c.patch_size_level0, who=self.name, from_corner=False)        # n 2
        pos = sincos_2d(cells[:, 0] * c.slide_ngrids + cells[:, 1], c.slide_ngrids, c.embed_dim)  # n e
        x = self.patch_embed["proj"](feats) + pos.to(feats.dtype)                                  # n e
        x = self.dropout(torch.cat([self.cls_token[0], x])[None])                                  # 1 1+n e
        for layer in self.encoder["layers"]:
            x = layer(x)
        if "layer_norm" in self.encoder:
            x = self.encoder["layer_norm"](x)
        pooled = x[0, 1:].sum(0) / max(len(feats), 1) if c.global_pool else x[0, 0]              # e
        return self.norm(pooled)
