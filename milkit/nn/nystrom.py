"""Nystrom self-attention (Xiong et al., AAAI 2021, arXiv:2102.03902), as used by TransMIL.

Adapted from lucidrains/nystrom-attention (MIT licence, Copyright (c) 2021 Phil Wang):
same projections, landmark means, iterative Moore-Penrose pseudo-inverse and depthwise
residual convolution over the values. Differences:

* landmarks are the means of ``min(n, m)`` contiguous, near-equal segments of the
  sequence (segment of token i = floor(i * m' / n)), so no landmark is empty and no
  zero-padding to a multiple of m (and no mask) is needed; for n <= m every token is
  its own landmark and the attention is exact up to the pseudo-inverse iterations;
* the pseudo-inverse runs in float32 with autocast disabled (bf16 iterations diverge),
  and each matrix gets its own initial scaling (Razavi et al.) instead of a batch-global one;
* :meth:`NystromAttention.query_attention` gives one query's exact softmax attention
  (for heatmaps) without building the n x n matrix.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def moore_penrose_pinv(x: Tensor, iters: int = 6) -> Tensor:
    """Iterative pseudo-inverse of square matrices x [..., m, m], always computed in float32."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        abs_x = x.abs()
        scale = abs_x.sum(-1).amax(-1) * abs_x.sum(-2).amax(-1)         # ...: ||x||_inf * ||x||_1
        z = x.transpose(-1, -2) / scale[..., None, None]                # ... m m
        for _ in range(iters):                                          # z (13I - xz(15I - xz(7I - xz))) / 4
            xz = x @ z
            z = 0.25 * z @ _diag_minus(13, xz @ _diag_minus(15, xz @ _diag_minus(7, xz)))
    return z


def _diag_minus(c: float, a: Tensor) -> Tensor:
    """c * I - a, without materialising I."""
    out = -a
    out.diagonal(dim1=-2, dim2=-1).add_(c)
    return out


class NystromAttention(nn.Module):
    """Multi-head Nystrom attention over a sequence x [B, n, dim] -> [B, n, dim]."""

    def __init__(self, dim: int, *, heads: int = 8, dim_head: int = 64, num_landmarks: int = 256,
                 pinv_iterations: int = 6, residual_conv_kernel: int = 33, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.num_landmarks, self.pinv_iterations = num_landmarks, pinv_iterations
        self.scale = dim_head ** -0.5
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        pad = residual_conv_kernel // 2
        self.res_conv = nn.Conv2d(heads, heads, (residual_conv_kernel, 1), padding=(pad, 0), groups=heads, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        q = q * self.scale

        m = min(n, self.num_landmarks)
        segment = torch.arange(n, device=x.device) * m // n              # n: landmark of each token
        count = torch.bincount(segment, minlength=m).to(q.dtype)[:, None]  # m 1
        q_land = q.new_zeros(*q.shape[:2], m, q.shape[-1]).index_add(2, segment, q) / count  # b h m d
        k_land = k.new_zeros(*k.shape[:2], m, k.shape[-1]).index_add(2, segment, k) / count  # b h m d

        attn1 = torch.einsum("bhid,bhjd->bhij", q, k_land).float().softmax(-1)       # b h n m
        attn2 = torch.einsum("bhid,bhjd->bhij", q_land, k_land).float().softmax(-1)  # b h m m
        attn3 = torch.einsum("bhid,bhjd->bhij", q_land, k).float().softmax(-1)       # b h m n
        attn2_inv = moore_penrose_pinv(attn2, self.pinv_iterations)                  # b h m m
        out = (attn1 @ attn2_inv).to(v.dtype) @ (attn3.to(v.dtype) @ v)               # b h n d
        out = out + self.res_conv(v)                                                 # depthwise residual
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))                   # b n dim

    def query_attention(self, x: Tensor, index: int = 0) -> Tensor:
        """Exact softmax attention of token ``index`` over all tokens, mean over heads; [B, n]."""
        inner = self.heads * self.dim_head
        w = self.to_qkv.weight                                           # 3*inner dim
        q = F.linear(x[:, index:index + 1], w[:inner])                   # b 1 inner
        k = F.linear(x, w[inner:2 * inner])                              # b n inner
        q = rearrange(q, "b i (h d) -> b h i d", h=self.heads)
        k = rearrange(k, "b n (h d) -> b h n d", h=self.heads)
        scores = torch.einsum("bhid,bhnd->bhin", q, k).float() * self.scale  # b h 1 n
        return scores.softmax(-1).mean(1)[:, 0]                          # b n
