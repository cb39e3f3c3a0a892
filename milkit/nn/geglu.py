"""The GEGLU feed-forward (Shazeer, "GLU Variants Improve Transformer", 2020, arXiv:2002.05202) in the
pre-norm form of lucidrains' Perceiver code, as PRISM's Perceiver uses it (mlp_activation 'geglu')."""

import torch.nn.functional as F
from torch import Tensor, nn


class GEGLU(nn.Module):
    """x [.., 2k] -> first half * GELU(second half) [.., k]."""

    def forward(self, x: Tensor) -> Tensor:
        x, gates = x.chunk(2, dim=-1)
        return x * F.gelu(gates)


class GEGLUFeedForward(nn.Module):
    """LayerNorm -> Linear(dim, 2 * mult * dim) -> GEGLU -> Linear (mlp_activation 'geglu', the published one)."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim * mult), GEGLU(), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.norm(x))
