"""Mask helpers: ``mask`` is boolean, True = real patch/token, False = padding."""

import torch
from torch import Tensor


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` that gives exactly 0 weight where ``mask`` is False.

    Rows with no valid entry return all zeros instead of NaN.
    """
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim)
    return weights * mask.to(weights.dtype)


def masked_mean(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Mean of ``x`` [B, N, E] over valid positions of ``mask`` [B, N]; empty bags give 0."""
    m = mask.unsqueeze(-1).to(x.dtype)                               # b n 1
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_max(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Max of ``x`` [B, N, E] over valid positions of ``mask`` [B, N]; empty bags give 0."""
    filled = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
    out = filled.amax(dim)
    return torch.where(mask.any(dim).unsqueeze(-1), out, torch.zeros_like(out))
