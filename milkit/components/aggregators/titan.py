"""TITAN's slide encoder (Ding et al., 2024, arXiv:2411.19666): a ViT with 2D ALiBi over CONCH v1.5 features on
the slide's patch grid, and CoCa attentional poolers.

Reference code: huggingface.co/MahmoodLab/TITAN remote code, ``vision_transformer.py`` (``preprocess_features``,
``VisionTransformer``, ``Block``, ``AttentionalPooler``, ``get_alibi``), ``configuration_titan.py``
(``TitanVisionConfig``'s defaults, ``attentional_pool = "parallel"``; its ``config.json`` was not read) and
``modeling_titan.py`` (``encode_slide_from_patch_features``: ``no_proj=True``). Differences: docs/aggregators.md.
"""

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput, FeatureSpec
from milkit.components.aggregators.slide_encoder import SlideEncoder, SlideEncoderConfig
from milkit.nn.alibi import BiasedBlock, alibi_2d
from milkit.nn.patch_grid import grid_cells


class TITANConfig(SlideEncoderConfig):
    embed_dim: int = Field(768, gt=0, description="Token width (TitanVisionConfig.embed_dim).")
    depth: int = Field(6, gt=0, description="Transformer blocks (TitanVisionConfig.depth).")
    num_heads: int = Field(12, gt=0, description="Attention heads, one ALiBi slope each (TitanVisionConfig).")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width / embed_dim (TitanVisionConfig).")
    pooler_heads: int = Field(8, gt=0, description="Heads of both attentional poolers (attn_pooler_heads).")
    pooler_queries: int = Field(128, gt=0, description="Queries of the caption pooler = `tokens` per slide "
                                "(attn_pooler_queries).")
    projection: bool = Field(False, description="Map the embedding by `proj` into the vision-language space "
                             "(TITAN's zero-shot); false = `encode_slide_from_patch_features` (no_proj=True).")
    patch_size_level0: int | None = Field(
        None, gt=0, description="Tile side in level-0 px (512 at 20x, 1024 at 40x for TITAN's 512-px 20x patches); "
                                "None = each bag's smallest coordinate spacing (tiles cut edge to edge).")

    @model_validator(mode="after")
    def _check(self) -> "TITANConfig":
        for width, heads in ((self.embed_dim, self.num_heads), (self.embed_dim, self.pooler_heads)):
            if width % heads:
                raise ValueError(f"embed_dim ({width}) must be divisible by num_heads and pooler_heads ({heads})")
        return self


class AttentionalPooler(nn.Module):
    """CoCa's attentional pooler (open_clip): learned queries attend over the LayerNormed tokens."""

    def __init__(self, dim: int, heads: int, queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(queries, dim))
        self.attn = nn.MultiheadAttention(dim, heads)
        self.ln_q, self.ln_k = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [t, e] (one slide) -> (pooled [q, e], attention over x [q, t], mean over heads)."""
        kv = self.ln_k(x)[:, None]                                                  # t 1 e
        out, w = self.attn(self.ln_q(self.query)[:, None], kv, kv)                  # q 1 e, 1 q t
        return out[:, 0], w[0]


class TITAN(SlideEncoder):
    """TITAN (Ding et al., 2024): CONCH v1.5 features on their patch grid -> ViT with 2D ALiBi -> poolers.

    Per bag: patches go to grid cells ``floor((coords - min) / patch_size_level0)``; features of one cell
    are summed and all-zero cells dropped (the reference's feature grid and background mask). Linear +
    GELU, a class token, ``depth`` blocks whose attention adds ``-slope_h * distance`` between cells,
    LayerNorm, then two attentional poolers over all tokens: ``embedding`` [B, 768] is the contrastive
    pooler's single query (the slide embedding of ``encode_slide_from_patch_features``), ``tokens``
    [B, 128, 768] the caption pooler's (what TITAN's report decoder reads). ``attention`` [B, N]: the
    contrastive query's attention (mean over heads) on each patch's cell, normalised over the real patches.
    Bags are encoded one at a time over their real patches, as the reference (batch of one).
    """

    name = "titan"
    Config = TITANConfig
    returns_attention = True
    provides_tokens = True
    expected_features = FeatureSpec(encoders=("conch-v1.5",), dim=768)

    def __init__(self, config: TITANConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        e = self.out_dim = config.embed_dim
        self.patch_embed = nn.Sequential(nn.Linear(in_dim, e), nn.GELU())
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.blocks = nn.ModuleList(BiasedBlock(e, config.num_heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(e, eps=1e-6)
        self.attn_pool = AttentionalPooler(e, config.pooler_heads, config.pooler_queries)
        self.attn_pool_contrastive = AttentionalPooler(e, config.pooler_heads, 1)
        self.proj = nn.Parameter(torch.empty(e, e)) if config.projection else None
        self.reset_parameters()
        self.load_published(self, convert=convert, ignore=() if config.projection else ("proj",),
                            expects="model.safetensors of huggingface.co/MahmoodLab/TITAN (vision_encoder.*)")

    def reset_parameters(self) -> None:
        """As ``VisionTransformer.init_weights`` (timm: trunc-normal 0.02 Linear weights, zero biases, class
        token N(0, 1e-6)); the poolers keep torch's defaults, as they are built after it in the reference, and
        ``proj`` is N(0, 1/embed_dim)."""
        for m in (*self.patch_embed.modules(), *self.blocks.modules()):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.proj is not None:
            nn.init.normal_(self.proj, std=self.out_dim**-0.5)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        outs = [self._one_bag(bag[real], xy[real]) for bag, real, xy in zip(feats, mask, coords)]  # one at a time
        attention = [a.new_zeros(real.shape).masked_scatter(real, a) for (_, _, a), real in zip(outs, mask)]  # n
        tokens = torch.stack([t for _, t, _ in outs])                        # b q e
        return AggregatorOutput(embedding=torch.stack([e for e, _, _ in outs]), attention=torch.stack(attention),
                                tokens=tokens, token_mask=tokens.new_ones(tokens.shape[:2], dtype=torch.bool))

    def _one_bag(self, feats: Tensor, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """feats [n, D], coords [n, 2] -> (embedding [E], caption tokens [Q, E], patch attention [n])."""
        cells = grid_cells(coords, self.config.patch_size_level0, who=self.name, from_corner=True)  # n 2
        width = int(cells[:, 1].max()) + 1 if len(cells) else 1
        ids, inverse = torch.unique(cells[:, 0] * width + cells[:, 1], return_inverse=True)  # m, n: row-major
        grid = feats.new_zeros(len(ids), feats.shape[1]).index_add_(0, inverse, feats)     # m D, a cell's sum
        keep = grid.ne(0).any(1)                                             # m: not background
        kept = torch.stack([ids[keep] // width, ids[keep] % width], 1)       # k 2
        x = torch.cat([self.cls_token[0], self.patch_embed(grid[keep])])[None]  # 1 1+k e
        bias = alibi_2d(kept, self.config.num_heads)[None]                   # 1 h 1+k 1+k
        for block in self.blocks:
            x = block(x, bias)
        x = self.norm(x)[0]                                                  # 1+k e
        pooled, w = self.attn_pool_contrastive(x)                            # 1 e, 1 1+k
        tokens, _ = self.attn_pool(x)                                        # q e
        embedding = pooled[0] @ self.proj if self.proj is not None else pooled[0]
        attn = w.new_zeros(len(ids)).masked_scatter(keep, w[0, 1:])[inverse]  # n: its cell's weight
        return embedding, tokens, attn / attn.sum().clamp_min(torch.finfo(attn.dtype).tiny)


def convert(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The HF ``model.safetensors`` (``vision_encoder.*`` beside ``text_encoder.*``) -> :class:`TITAN`'s keys:
    the vision encoder only, ``blocks.modules_list.i`` (its CustomSequential) as ``blocks.i``; a file of the
    vision encoder alone (no prefix) is taken as it is."""
    if any(k.startswith("vision_encoder.") for k in state):
        state = {k[len("vision_encoder."):]: v for k, v in state.items() if k.startswith("vision_encoder.")}
    return {k.replace("blocks.modules_list.", "blocks.", 1): v for k, v in state.items()}
