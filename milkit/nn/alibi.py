"""2D ALiBi: attention with linear biases (Press et al., ICLR 2022, arXiv:2108.12409) over a patch grid, as
TITAN uses it (Ding et al., 2024, arXiv:2411.19666): head h adds ``-slope_h * ||cell_i - cell_j||`` (Euclidean
distance in grid cells) to the score of query patch i for key patch j; prefix (class) tokens get no bias.
:class:`BiasedBlock` is the ViT block that adds such a bias to its attention scores.

Ported from the ``get_alibi`` method of TITAN's ``vision_transformer.py`` (Hugging Face MahmoodLab/TITAN), whose
``get_slopes`` is the ALiBi reference's (ofirpress/attention_with_linear_biases).
"""

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def alibi_slopes(heads: int) -> list[float]:
    """The ALiBi slopes: a geometric sequence from 2^(-8/n) for n a power of two; otherwise those of the power of
    two below, then every other slope of the power of two above."""
    def power_of_two(n: int) -> list[float]:
        p = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [p * p**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    low = 2 ** math.floor(math.log2(heads))
    return power_of_two(low) + power_of_two(2 * low)[0::2][: heads - low]


def alibi_2d(cells: Tensor, heads: int, *, prefix: int = 1) -> Tensor:
    """Grid cells [n, 2] (integers) -> additive attention bias [heads, prefix + n, prefix + n] (float32).

    Squared distances of integer cells are exact in float32 (below 2^24), and IEEE sqrt rounds correctly, so
    the values equal the reference's (distances in float64 numpy, cast to float32, times the slopes)."""
    c = cells.float()                                                           # n 2
    dist = (c[:, None] - c[None]).square().sum(-1).sqrt()                       # n n
    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float32, device=cells.device)
    return F.pad(-(dist * slopes[:, None, None]), (prefix, 0, prefix, 0))       # h (p+n) (p+n)


class BiasedBlock(nn.Module):
    """timm's pre-norm ViT block (LayerNorm eps 1e-6, GELU MLP); attention takes an additive bias."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.ModuleDict({"qkv": nn.Linear(dim, 3 * dim), "proj": nn.Linear(dim, dim)})
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, t, e = x.shape
        q, k, v = self.attn["qkv"](self.norm1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # b h t d
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))    # b h t d
        x = x + self.attn["proj"](a.transpose(1, 2).reshape(b, t, e))
        return x + self.mlp(self.norm2(x))
