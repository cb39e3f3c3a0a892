"""RRT-MIL's regional attention (Tang et al., CVPR 2024): R-MSA within square regions of a bag's patch
grid, with EPEG, and CR-MSA across regions. Reference: DearCaat/RRT-MIL ``modules/rmsa.py``
(InnerAttention, RegionAttntion, CrossRegionAttntion); used by :mod:`milkit.components.aggregators.rrt`.
"""

import math

import torch
from einops import rearrange
from torch import Tensor, nn


def per_region(fn: nn.Module, x: Tensor, region_num: int) -> Tensor:
    """The reference's region partition of one bag x [n, c]: lay it row-major on a zero-padded square grid
    (side ceil(sqrt(n)) rounded up to a multiple of region_num), apply fn to the region_num^2 regions
    [r, p, c] and return the first n tokens of the result [n, c]."""
    n = x.shape[0]
    side = math.ceil(math.sqrt(n))
    size = (side + -side % region_num) // region_num                                # region side
    x = torch.cat([x, x.new_zeros((region_num * size) ** 2 - n, x.shape[1])])     # side*side c
    r = rearrange(x, "(gh sh gw sw) c -> (gh gw) (sh sw) c", sh=size, sw=size, gw=region_num)
    return rearrange(fn(r), "(gh gw) (sh sw) c -> (gh sh gw sw) c", sh=size, gw=region_num)[:n]


class InnerAttention(nn.Module):
    """Multi-head self-attention within each group [g, p, c]; EPEG (``epeg_k``, None = off) adds
    conv(attn) along the query axis."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool, dropout: float, epeg_k: int | None,
                 epeg_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj, self.proj_drop = nn.Linear(dim, dim), nn.Dropout(dropout)
        self.pe = (nn.Conv2d(heads, heads, (epeg_k, 1), padding=(epeg_k // 2, 0), groups=heads, bias=epeg_bias)
                   if epeg_k else None)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "g p (three h d) -> three g h p d", three=3, h=self.heads)
        attn = (q * self.scale) @ k.transpose(-1, -2)                                # g h p p
        if self.pe is not None:
            attn = attn + self.pe(attn)
        return self.proj_drop(self.proj(rearrange(attn.softmax(-1) @ v, "g h p d -> g p (h d)")))  # g p c


class CrossRegionAttention(nn.Module):
    """CR-MSA over regions [r, p, c]: each region's tokens are pooled into k representatives (softmax
    over the region), these attend across regions (``attn``), and are dispatched back (min-max scores x
    softmax over representatives). ``mlp``: representative scores from a small MLP instead of a matrix."""

    def __init__(self, dim: int, k: int, attn: InnerAttention, *, mlp: bool) -> None:
        super().__init__()
        self.attn = attn
        self.phi = (nn.Sequential(nn.Linear(dim, dim // 4, bias=False), nn.Tanh(), nn.Linear(dim // 4, k, bias=False))
                    if mlp else nn.Parameter(torch.empty(dim, k)))

    def forward(self, regions: Tensor) -> Tensor:
        phi = self.phi
        logits = (phi(regions) if isinstance(phi, nn.Module) else regions @ phi).transpose(1, 2)  # r k p
        lo, hi = logits.amin(-1, keepdim=True), logits.amax(-1, keepdim=True)        # r k 1
        spread = (logits - lo) / (hi - lo + 1e-8) * logits.softmax(1)                # r k p: dispatch weights
        reps = self.attn((logits.softmax(-1) @ regions).transpose(0, 1))             # k r c: across regions
        return torch.einsum("krc,rkp->rpc", reps, spread)                            # r p c
