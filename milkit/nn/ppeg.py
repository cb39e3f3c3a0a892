"""Pyramid position encoding generator (PPEG) from TransMIL (Shao et al., NeurIPS 2021)."""

import torch
from torch import Tensor, nn


class PPEG(nn.Module):
    """Depthwise 7x7, 5x5 and 3x3 convolutions plus identity over the patch tokens laid out on an H x W grid.

    The first token (class token) passes through unchanged.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj7 = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj5 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj3 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """x [B, 1 + H*W, C] -> [B, 1 + H*W, C]."""
        b, _, c = x.shape
        cls_token, tokens = x[:, :1], x[:, 1:]                           # b 1 c, b hw c
        grid = tokens.transpose(1, 2).reshape(b, c, height, width)      # b c h w
        grid = grid + self.proj7(grid) + self.proj5(grid) + self.proj3(grid)
        return torch.cat([cls_token, grid.flatten(2).transpose(1, 2)], dim=1)  # b 1+hw c
