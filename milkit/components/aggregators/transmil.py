"""TransMIL: transformer-based correlated MIL (Shao et al., NeurIPS 2021, arXiv:2106.00908)."""

import math

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.nn.nystrom import NystromAttention
from milkit.nn.ppeg import PPEG


class TransMILConfig(ComponentConfig):
    embed_dim: int = Field(512, gt=0, description="Token width (the paper: 512).")
    heads: int = Field(8, gt=0, description="Attention heads; must divide embed_dim.")
    num_landmarks: int | None = Field(None, gt=0, description="Nystrom landmarks; default embed_dim // 2.")
    pinv_iterations: int = Field(6, ge=1, description="Moore-Penrose iterations of the Nystrom pseudo-inverse.")
    residual_conv_kernel: int = Field(33, ge=1, description="Odd kernel of the depthwise value-residual convolution.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the attention output (the paper: 0.1).")

    @model_validator(mode="after")
    def _check(self) -> "TransMILConfig":
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by heads ({self.heads})")
        if self.residual_conv_kernel % 2 == 0:
            raise ValueError(f"residual_conv_kernel must be odd, got {self.residual_conv_kernel}")
        return self


class TransLayer(nn.Module):
    """Pre-norm Nystrom self-attention with a residual connection (no feed-forward, as the paper)."""

    def __init__(self, config: TransMILConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(
            dim, heads=config.heads, dim_head=dim // config.heads,
            num_landmarks=config.num_landmarks or dim // 2, pinv_iterations=config.pinv_iterations,
            residual_conv_kernel=config.residual_conv_kernel, dropout=config.dropout,
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(self.norm(x))


class TransMIL(Aggregator):
    """TransMIL (Shao et al., 2021): fc -> square padding -> [CLS] -> TransLayer -> PPEG -> TransLayer -> LN.

    The embedding is the class token. Bags are processed one at a time over their real
    patches only, so padding never changes an output (see docs/transmil.md). Patches
    are laid out on the PPEG grid in their stored order; the bag is padded to the next
    square by repeating its first patches, as the paper. ``attention`` is the class
    token's exact softmax attention in the last layer (mean over heads), with the weight
    of repeated patches added to their originals and renormalised over the real patches.
    """

    name = "transmil"
    Config = TransMILConfig
    returns_attention = True
    permutation_invariant = False

    def __init__(self, config: TransMILConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        dim = self.out_dim = config.embed_dim
        self.fc = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.layer1 = TransLayer(config)
        self.ppeg = PPEG(dim)
        self.layer2 = TransLayer(config)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        embeddings, attentions = [], []
        for bag, real in zip(feats, mask):                               # variable-length bags, one at a time
            emb, attn = self._one_bag(bag[real])                         # e, n_real
            embeddings.append(emb)
            attentions.append(torch.zeros(real.shape, dtype=attn.dtype, device=attn.device)
                              .masked_scatter(real, attn))                # n
        return AggregatorOutput(embedding=torch.stack(embeddings), attention=torch.stack(attentions))

    def _one_bag(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """feats [n, D] of one bag -> (embedding [E], patch attention [n])."""
        n = feats.shape[0]
        h = self.fc(feats)                                               # n e
        side = math.ceil(math.sqrt(n))
        repeat = torch.arange(side * side - n, device=h.device) % max(n, 1)  # first patches fill the square
        h = torch.cat([h, h[repeat]])                                    # s*s e
        x = torch.cat([self.cls_token.to(h.dtype), h[None]], dim=1)      # 1 1+s*s e
        x = self.layer1(x)
        if n:
            x = self.ppeg(x, side, side)
        normed = self.layer2.norm(x)
        x = x + self.layer2.attn(normed)                                 # 1 1+s*s e
        weights = self.layer2.attn.query_attention(normed, 0)[0, 1:]     # s*s: class token -> patches
        source = torch.cat([torch.arange(n, device=h.device), repeat])   # s*s: original patch of each slot
        per_patch = weights.new_zeros(n).index_add(0, source, weights)   # n
        per_patch = per_patch / per_patch.sum().clamp_min(torch.finfo(per_patch.dtype).tiny)
        return self.norm(x)[0, 0], per_patch
