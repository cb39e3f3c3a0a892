"""Padded batches for the aggregator tests: real patches N(0, 1), loud junk in the padding (N(3, 10)), so
that a model which lets padding through fails visibly."""

import torch


def junk_padded(lengths: list[int], dim: int, pad_to: int | None = None,
                seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(feats [B, N, dim], mask [B, N] True at real patches, coords [B, N, 2] zeros); N = pad_to or max(lengths)."""
    n = pad_to or max(lengths)
    gen = torch.Generator().manual_seed(seed)
    junk = torch.randn(len(lengths), n, dim, generator=gen) * 10 + 3
    real = torch.randn(len(lengths), n, dim, generator=gen)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]                   # b n
    return torch.where(mask[..., None], real, junk), mask, torch.zeros(len(lengths), n, 2)
