"""LongNet's dilated attention (Ding et al., 2023, arXiv:2307.02486) in plain torch, as Prov-GigaPath's slide
encoder runs it.

Reference: microsoft/torchscale ``torchscale/component/dilated_attention.py`` (``DilatedAttention``: ``gathering``,
``dense_to_sparse``, ``sparse_to_dense``, ``scattering``), vendored unchanged by prov-gigapath/prov-gigapath under
``gigapath/torchscale/``, with its ``MultiheadAttention`` projections and sub-LayerNorm (``subln``). Upstream runs
each block with flash-attention and mixes the branches by its softmax log-sum-exp; here each block is
``F.scaled_dot_product_attention`` and the log-sum-exp is computed beside it without gradient (upstream mixes the
branches under ``torch.no_grad()`` too, so the gradients are the same).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ABSENT = -1e8
"""Log-sum-exp of a (position, head) a branch skips: the reference's fill, weight exp(-1e8) = 0."""


def _sparse(x: Tensor, segment: int, r: int) -> Tensor:
    """x [b, n, h, d] (h a multiple of r) -> [(b g), l, h, d]: the sequence cut into g segments of ``segment``
    positions (the last zero-padded), each padded to l * r; head group j (heads j*h/r ..) keeps positions j mod r."""
    b, n, h, d = x.shape
    x = F.pad(x, (0, 0, 0, 0, 0, -n % segment)).reshape(-1, segment, h, d)      # (b g) s h d
    x = F.pad(x, (0, 0, 0, 0, 0, -segment % r))                                 # (b g) (l r) h d
    x = x.reshape(x.shape[0], -1, r, r, h // r, d).diagonal(dim1=2, dim2=3)     # (b g) l hg d r
    return x.permute(0, 1, 4, 2, 3).reshape(x.shape[0], -1, h, d)               # (b g) l (r hg) d


def _dense(x: Tensor, r: int, fill: float) -> Tensor:
    """Inverse of :func:`_sparse` per segment: [(b g), l, h, ...] -> [(b g), l * r, h, ...], head group j's
    values at the positions j mod r, ``fill`` elsewhere."""
    bg, l, h = x.shape[:3]
    x = x.reshape(bg, l, r, h // r, *x.shape[3:])                               # (b g) l r hg ..
    full = x.new_full((bg, l, r, r, h // r, *x.shape[4:]), fill)                # (b g) l r1 r2 hg ..
    i = torch.arange(r, device=x.device)
    full[:, :, i, i] = x                                                        # r1 == r2 only
    return full.reshape(bg, l * r, h, *x.shape[4:])


def _join(x: Tensor, r: int, fill: float, b: int, n: int, h: int) -> Tensor:
    """[(b g), l, hp, ...] -> [b, n, h, ...]: :func:`_dense`, the segments joined with their padding (as
    upstream's ``scattering``), cut to the n positions and h heads."""
    return _dense(x, r, fill).reshape(b, -1, *x.shape[2:])[:, :n, :h]


def dilated_attention(q: Tensor, k: Tensor, v: Tensor, segments: list[int], dilations: list[int]) -> Tensor:
    """q, k, v [b, n, h, d] -> [b, n, h, d]. For each (segment length s, dilation r): segments of min(s, n)
    positions, r head groups each attending among every r-th position of a segment (zero padding included, as
    upstream); a position's branch outputs are mixed by the softmax over branches of their log-sum-exp.

    As upstream's ``scattering``, the segments are joined back with their padding to a multiple of r still in
    place: when s is not a multiple of r and n > s, later segments' outputs land shifted (of the published
    numbers, only segment 185363 with dilation 8, on sequences of more than 185363 tiles)."""
    b, n, h, d = q.shape
    outs, lses = [], []
    for s, r in zip(segments, dilations):
        s, hp = min(s, n), -(-h // r) * r                                       # heads padded to a multiple of r
        qs, ks, vs = (_sparse(F.pad(t, (0, 0, 0, hp - h)), s, r).transpose(1, 2) for t in (q, k, v))  # B hp l d
        o = F.scaled_dot_product_attention(qs, ks, vs)                          # B hp l d
        with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
            lse = torch.logsumexp(qs.float() @ ks.float().transpose(-1, -2) * d**-0.5, -1)  # B hp l
        outs.append(_join(o.transpose(1, 2), r, 0.0, b, n, h))                  # b n h d
        lses.append(_join(lse.transpose(1, 2), r, ABSENT, b, n, h))             # b n h
    with torch.no_grad():
        weights = torch.softmax(torch.stack(lses), dim=0)                       # k b n h
    return sum((o * w[..., None].to(o.dtype) for o, w in zip(outs, weights)), torch.zeros_like(q))


class DilatedAttention(nn.Module):
    """torchscale's ``DilatedAttention`` (self-attention, ``subln``): q/k/v projections, dilated attention,
    LayerNorm over the heads' concatenated outputs (``inner_attn_ln``), output projection."""

    def __init__(self, dim: int, heads: int, segments: list[int], dilations: list[int], eps: float = 1e-5) -> None:
        super().__init__()
        self.heads, self.segments, self.dilations = heads, list(segments), list(dilations)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.inner_attn_ln = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        b, n, e = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1) for p in (self.q_proj, self.k_proj, self.v_proj))  # b n h d
        out = dilated_attention(q, k, v, self.segments, self.dilations).reshape(b, n, e)
        return self.out_proj(self.inner_attn_ln(out))
