"""Aligners of the ``lm`` head: slide tokens [B, T, E] -> a visual prefix [B, P, H] in the LM's embedding space.

``mlp``: LLaVA-1.5's projector (Liu et al., CVPR 2024, arXiv:2310.03744), one prefix token per slide
token, padding kept as padding. ``resampler``: a Perceiver resampler (Flamingo, Alayrac et al., NeurIPS
2022, arXiv:2204.14198): ``P`` learned latents cross-attend to [tokens; latents], so every slide gets
``P`` prefix tokens. (The ``perceiver`` aggregator has its own copy; component families share no code.)
"""

import torch
from torch import Tensor, nn


class MLPAligner(nn.Module):
    """Linear(E, H) -> GELU -> Linear(H, H) on each token; the prefix mask is the token mask."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [B, T, E], mask [B, T] -> prefix [B, T, H], mask [B, T]."""
        return self.net(tokens), mask


class ResamplerLayer(nn.Module):
    """Latents cross-attend to the layer-normed [tokens; latents] (padding masked), then a feed-forward block."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_media, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, latents: Tensor, ignore: Tensor) -> Tensor:
        """x [B, T, H], latents [B, P, H], ignore [B, T + P] (True = padding) -> latents [B, P, H]."""
        q = self.norm_latents(latents)
        kv = torch.cat((self.norm_media(x), q), dim=1)                     # b t+p h
        latents = latents + self.attn(q, kv, kv, key_padding_mask=ignore, need_weights=False)[0]
        return latents + self.ff(latents)


class Resampler(nn.Module):
    """Tokens -> Linear(E, H) -> ``depth`` resampler layers over ``n_latents`` latents -> LayerNorm."""

    def __init__(self, in_dim: int, dim: int, *, n_latents: int, depth: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"[head] resampler_heads = {heads} must divide the LM's width {dim}")
        self.proj = nn.Linear(in_dim, dim)
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * dim ** -0.5)
        self.layers = nn.ModuleList(ResamplerLayer(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [B, T, E], mask [B, T] -> prefix [B, P, H], mask [B, P] (all True)."""
        b = tokens.shape[0]
        x = self.proj(tokens)                                              # b t h
        latents = self.latents.expand(b, -1, -1)                           # b p h
        keep = torch.cat((mask, torch.ones(latents.shape[:2], dtype=torch.bool, device=mask.device)), dim=1)
        for layer in self.layers:
            latents = layer(x, latents, ~keep)
        prefix = self.norm(latents)
        return prefix, torch.ones(prefix.shape[:2], dtype=torch.bool, device=prefix.device)
