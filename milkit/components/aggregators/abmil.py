"""Attention-based MIL pooling (Ilse et al., ICML 2018, arXiv:1802.04712)."""

import torch
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.nn.masking import masked_softmax


class ABMILConfig(ComponentConfig):
    embed_dim: int = Field(256, gt=0, description="Width of the per-patch embedding.")
    attn_dim: int = Field(128, gt=0, description="Hidden width of the attention MLP.")
    gated: bool = Field(True, description="Gated attention (tanh * sigmoid), as in the paper's best variant.")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout after the embedding.")


class ABMIL(Aggregator):
    """Attention-based MIL pooling (Ilse et al., 2018).

    Embeds each patch, scores it with a (gated) attention MLP and returns the
    attention-weighted mean. Padded patches get exactly zero weight.

    Differences from the paper: dropout after the embedding, as in CLAM.
    """

    name = "abmil"
    Config = ABMILConfig
    returns_attention = True

    def __init__(self, config: ABMILConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        self.out_dim = config.embed_dim
        self.embed = nn.Sequential(nn.Linear(in_dim, config.embed_dim), nn.ReLU(), nn.Dropout(config.dropout))
        self.attn_v = nn.Linear(config.embed_dim, config.attn_dim)
        self.attn_u = nn.Linear(config.embed_dim, config.attn_dim) if config.gated else None
        self.attn_w = nn.Linear(config.attn_dim, 1)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = self.embed(feats)                                        # b n e
        a = torch.tanh(self.attn_v(h))                               # b n k
        if self.attn_u is not None:
            a = a * torch.sigmoid(self.attn_u(h))                    # gate
        weights = masked_softmax(self.attn_w(a).squeeze(-1), mask)   # b n
        embedding = torch.einsum("bn,bne->be", weights, h)           # b e
        return AggregatorOutput(embedding=embedding, attention=weights)
