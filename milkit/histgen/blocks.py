"""HistGen's transformer building blocks (Annotated-Transformer style, as in HistGen/R2GenCMN).

The layer norm is HistGen's own (unbiased std, eps added to the std), attention runs through
``F.scaled_dot_product_attention`` (same maths as the reference's explicit softmax), and the
sinusoidal positional encoding is computed on the fly for the positions needed instead of
being stored as a 100,000-row persistent buffer.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HistGenLayerNorm(nn.Module):
    """``weight * (x - mean) / (std + eps) + bias`` with the *unbiased* std (HistGen's ``LayerNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()                                                 # statistics in fp32 under autocast
        mean = h.mean(-1, keepdim=True)
        std = h.std(-1, keepdim=True)                                 # unbiased (d - 1)
        return (self.weight * (h - mean) / (std + self.eps) + self.bias).to(x.dtype)


def sinusoidal_pe(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal encoding of integer ``positions`` [L] -> [L, dim] float32 (HistGen's formula)."""
    pos = positions.float().unsqueeze(1)                              # l 1
    div = torch.exp(torch.arange(0, dim, 2, device=positions.device).float() * -(math.log(10000.0) / dim))
    pe = torch.zeros(positions.shape[0], dim, device=positions.device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def add_pe(x: Tensor, start: int = 0) -> Tensor:
    """``x`` [..., L, dim] + the encoding of positions ``start .. start+L-1``."""
    pos = torch.arange(start, start + x.shape[-2], device=x.device)
    return x + sinusoidal_pe(pos, x.shape[-1]).to(x.dtype)


def any_key(mask: Tensor) -> Tensor:
    """Key mask [..., L] with position 0 switched on in rows that have no valid key.

    Such rows (an empty bag) would give NaN attention; their outputs are masked downstream.
    """
    empty = ~mask.any(-1, keepdim=True)
    first = torch.zeros_like(mask)
    first[..., 0] = True
    return mask | (empty & first)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with four biased projections and dropout on the attention weights."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model ({dim}) must be divisible by num_heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def split(self, x: Tensor) -> Tensor:
        """[b, l, h*dk] -> [b, h, l, dk]."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Split-head q [b,h,lq,dk], k/v [b,h,lk,dk], bool mask (True = attend) -> [b, lq, dim]."""
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # b h lq dk
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.split(self.q_proj(query)), self.split(self.k_proj(key)), self.split(self.v_proj(value))
        return self.attend(q, k, v, mask)


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class TransformerLayer(nn.Module):
    """Pre-norm self-attention + FFN layer: ``x + drop(f(LN(x)))`` twice."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.ffn = FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2 = HistGenLayerNorm(dim), HistGenLayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x [b, l, dim]; key_mask [b, l] True = real key (padded keys are ignored)."""
        mask = None if key_mask is None else any_key(key_mask)[:, None, None, :]  # b 1 1 l
        h = self.norm1(x)
        x = x + self.dropout(self.attn(h, h, h, mask))
        return x + self.dropout(self.ffn(self.norm2(x)))
