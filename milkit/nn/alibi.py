"""2D ALiBi: attention with linear biases (Press et al., ICLR 2022, arXiv:2108.12409) over a patch grid, as
TITAN uses it (Ding et al., 2024, arXiv:2411.19666): head h adds ``-slope_h * ||cell_i - cell_j||`` (Euclidean
distance in grid cells) to the score of query patch i for key patch j; prefix (class) tokens get no bias.

Ported from the ``get_alibi`` method of TITAN's ``vision_transformer.py`` (Hugging Face MahmoodLab/TITAN), whose
``get_slopes`` is the ALiBi reference's (ofirpress/attention_with_linear_biases).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


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
