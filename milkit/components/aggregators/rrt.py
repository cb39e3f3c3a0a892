"""RRT-MIL: re-embedded regional transformer + AB-MIL (Tang et al., CVPR 2024, arXiv:2402.17228).

Reference code: DearCaat/RRT-MIL, ``modules/rrt.py`` (RRTMIL, RRTEncoder, TransLayer, initialize_weights),
``modules/rmsa.py`` (milkit/nn/region_attention.py), ``modules/datten.py``
(DAttention, Attention) and ``main.py`` (the defaults). Differences: docs/aggregators.md.
"""

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.nn.masking import masked_softmax
from milkit.nn.region_attention import CrossRegionAttention, InnerAttention, per_region

ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class RRTConfig(ComponentConfig):
    embed_dim: int = Field(512, gt=0, description="Width after the input projection and in the encoder (mlp_dim).")
    act: Literal["relu", "gelu"] = Field("relu", description="Activation of the input projection (act).")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout after the input projection (dropout).")
    n_layers: int = Field(2, ge=1, description="Encoder layers: n_layers - 1 R-MSA, then CR-MSA (n_trans_layers).")
    heads: int = Field(8, gt=0, description="Heads of R-MSA; must divide embed_dim (n_heads).")
    region_num: int = Field(8, gt=0, description="R-MSA regions per side of the square patch grid (region_num).")
    trans_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout after each attention (trans_drop_out).")
    qkv_bias: bool = Field(True, description="Biases of the query/key/value projections (qkv_bias).")
    epeg: bool = Field(True, description="EPEG: a conv over each R-MSA attention map added to it (epeg).")
    epeg_k: int = Field(15, gt=0, description="Odd kernel length of the EPEG conv (epeg_k).")
    epeg_bias: bool = Field(True, description="Bias of the EPEG conv (epeg_bias).")
    cr_msa: bool = Field(True, description="Cross-region attention as the last encoder layer (cr_msa).")
    crmsa_k: int = Field(3, gt=0, description="Representative tokens per region in CR-MSA (crmsa_k).")
    crmsa_heads: int = Field(8, gt=0, description="Heads of CR-MSA; must divide embed_dim (crmsa_heads).")
    crmsa_mlp: bool = Field(False, description="CR-MSA scores from an MLP instead of a linear map (crmsa_mlp).")
    all_shortcut: bool = Field(False, description="Residual around the whole encoder (all_shortcut).")
    da_act: Literal["tanh", "relu", "gelu"] = Field(
        "tanh", description="Activation of the AB-MIL attention (da_act; tanh in every README command).")

    @model_validator(mode="after")
    def _check(self) -> "RRTConfig":
        for key in ("heads", "crmsa_heads"):
            if self.embed_dim % getattr(self, key):
                raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by {key} ({getattr(self, key)})")
        if self.epeg_k % 2 == 0:
            raise ValueError(f"epeg_k must be odd, got {self.epeg_k}")
        return self


class TransLayer(nn.Module):
    """The reference's TransLayer (FFN and drop-path off, its defaults) over one bag [n, c]:
    x + attn(LayerNorm(x)), attn applied to the regions of the grid."""

    def __init__(self, dim: int, attn: nn.Module, region_num: int) -> None:
        super().__init__()
        self.norm, self.attn, self.region_num = nn.LayerNorm(dim), attn, region_num

    def forward(self, x: Tensor) -> Tensor:
        return x + per_region(self.attn, self.norm(x), self.region_num)


class RRT(Aggregator):
    """RRT-MIL (Tang et al., 2024): Linear + act + dropout -> R-MSA layers -> CR-MSA -> LayerNorm -> AB-MIL.

    Bags run one at a time over their real patches (R-MSA and CR-MSA lay a bag's patches, in stored
    order, on its own zero-padded square grid, as the reference does at batch size 1), so padding never
    changes an output. ``embedding`` [B, embed_dim]: the AB-MIL pooled re-embedded patches (the
    reference's predictor is milkit's head); ``attention``: its softmax over real patches.
    Reference training (main.py): Adam, lr 2e-4, weight decay 1e-5, cosine over 200 epochs, batch size 1.
    """

    name = "rrt"
    Config = RRTConfig
    returns_attention = True
    permutation_invariant = False  # regions are blocks of the grid in patch order

    def __init__(self, config: RRTConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        e = self.out_dim = config.embed_dim
        self.patch_to_emb = nn.Sequential(nn.Linear(in_dim, e), ACTS[config.act](), nn.Dropout(config.dropout))
        attn = dict(qkv_bias=config.qkv_bias, dropout=config.trans_dropout)
        self.layers = nn.ModuleList(
            TransLayer(e, InnerAttention(e, config.heads, **attn, epeg_k=config.epeg_k if config.epeg else None,
                                         epeg_bias=config.epeg_bias), config.region_num)
            for _ in range(config.n_layers - 1))                                     # R-MSA
        cross = CrossRegionAttention(e, config.crmsa_k, InnerAttention(e, config.crmsa_heads, **attn, epeg_k=None),
                                     mlp=config.crmsa_mlp)
        # upstream's CR-MSA TransLayer is not given region_num: its default, 8, whatever region_num is
        self.cr_msa = TransLayer(e, cross, 8) if config.cr_msa else None
        self.norm = nn.LayerNorm(e)
        self.attention = nn.Sequential(nn.Linear(e, 128, bias=False), ACTS[config.da_act](),
                                       nn.Linear(128, 1, bias=False))             # DAttention, D = 128 upstream
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialize_weights: xavier-normal Linear/Conv2d weights, zero biases, LayerNorms
        at 1 and 0 (torch's defaults); CR-MSA's linear phi kaiming-uniform (a = sqrt(5))."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, CrossRegionAttention) and isinstance(m.phi, nn.Parameter):
                nn.init.kaiming_uniform_(m.phi, a=math.sqrt(5))

    def encode(self, x: Tensor) -> Tensor:
        """RRTEncoder over one bag's real patches [n, e] -> [n, e]."""
        if x.shape[0] == 0:                                                          # empty bag: no grid
            return self.norm(x)
        shortcut = x
        for layer in self.layers:
            x = layer(x)
        if self.cr_msa is not None:
            x = self.cr_msa(x)
        return self.norm(x + shortcut if self.config.all_shortcut else x)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = self.patch_to_emb(feats)                                                 # b n e
        z = [self.encode(bag[real]) for bag, real in zip(h, mask)]                  # n_real e, one per bag
        z = torch.stack([x.new_zeros(h.shape[1:]).masked_scatter(real[:, None], x) for x, real in zip(z, mask)])
        weights = masked_softmax(self.attention(z).squeeze(-1), mask)                # b n
        return AggregatorOutput(embedding=torch.einsum("bn,bne->be", weights, z), attention=weights)
