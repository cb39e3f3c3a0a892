"""Gated attention scores (Ilse, Tomczak & Welling, ICML 2018, arXiv:1802.04712), in the form of DTFD-MIL's
``Attention_Gated`` with K = 1 (hrzhang1123/DTFD-MIL ``Model/Attention.py``)."""

import torch
from torch import Tensor, nn


class GatedAttention(nn.Module):
    """Attention_Gated with K = 1: x [.., n, m] -> unnormalised scores [.., n]."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.v, self.u, self.w = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.w(torch.tanh(self.v(x)) * torch.sigmoid(self.u(x))).squeeze(-1)
