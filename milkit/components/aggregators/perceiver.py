"""Perceiver resampler: a fixed set of learned latents cross-attends to the patches (Flamingo, Alayrac et al.,
NeurIPS 2022, arXiv:2204.14198), as HistoGPT (Tran et al., 2024) resamples WSI patch features.

Reference code: lucidrains/flamingo-pytorch @ 0e1a915, ``flamingo_pytorch/flamingo_pytorch.py``
(FeedForward, PerceiverAttention, PerceiverResampler); the in_dim -> dim projection in front of it is
HistoGPT's (marrlab/HistoGPT @ 1017667, ``histogpt/models/histogpt.py``, PerceiverResampler). PRISM
(Shaikovski et al., 2024, arXiv:2405.10254) uses a different Perceiver of its own (the ``prism``
aggregator). Defaults: PerceiverResampler's and its README's example. Differences: docs/aggregators.md.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import Tensor, einsum, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig


class PerceiverConfig(ComponentConfig):
    dim: int = Field(1024, gt=0, description="Latent width; patches are projected in_dim -> dim without bias "
                     "(flamingo-pytorch README's dim = 1024).")
    depth: int = Field(2, ge=1, description="Cross-attention + feed-forward layers (the README's depth = 2).")
    num_latents: int = Field(64, ge=1, description="Learned latent queries = slide tokens (the class default).")
    heads: int = Field(8, ge=1, description="Cross-attention heads (the class default).")
    dim_head: int = Field(64, ge=1, description="Width of each head (the class default).")
    ff_mult: int = Field(4, ge=1, description="Feed-forward hidden width = ff_mult * dim (the class default).")
    pool: Literal["mean", "first"] = Field(
        "mean", description="Slide embedding from the latents: their mean, or the first latent as a class token.")


class FeedForward(nn.Sequential):
    """lucidrains' FeedForward: LayerNorm -> Linear(dim, mult * dim) -> GELU -> Linear, no biases."""

    def __init__(self, dim: int, mult: int) -> None:
        inner = int(dim * mult)
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """lucidrains' PerceiverAttention, with a patch mask: latents attend to [patches; latents]."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.scale, self.heads = dim_head ** -0.5, heads
        self.norm_media, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * heads * 2, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)

    def forward(self, x: Tensor, latents: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, N, dim], latents [B, L, dim], mask [B, N] -> (update [B, L, dim], weights [B, H, L, N + L])."""
        x, latents = self.norm_media(x), self.norm_latents(latents)
        q = self.to_q(latents)                                             # b l (h d)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)  # b n+l (h d): the latents' own keys too
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        sim = einsum("b h i d, b h j d -> b h i j", q * self.scale, k)     # b h l n+l
        keep = F.pad(mask, (0, latents.shape[1]), value=True)              # b n+l: latents are always real
        sim = sim.masked_fill(~keep[:, None, None], -torch.finfo(sim.dtype).max)
        attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)  # exactly 0 at padding
        out = rearrange(einsum("b h i j, b h j d -> b h i d", attn, v), "b h l d -> b l (h d)")
        return self.to_out(out), attn


class Perceiver(Aggregator):
    """Perceiver resampler (Flamingo's, as in HistoGPT): patches -> ``num_latents`` slide tokens.

    Patches are projected to ``dim`` (Linear, no bias) plus a learned media embedding
    (flamingo's ``time_pos_emb`` for one medium); ``depth`` times, the latents cross-attend to the
    layer-normed patches concatenated with themselves (residual), then pass a feed-forward
    block (residual); a final LayerNorm gives ``tokens`` [B, num_latents, dim] (``token_mask``
    all True) for heads that attend over the slide. ``embedding`` [B, dim]: the mean of the
    latents (``pool = 'first'``: latent 0). Padded patches are masked out of every
    cross-attention. ``attention`` [B, N]: the last cross-attention's weights on each patch,
    mean over heads and latents (the rest of each latent's weight is on the latents themselves).
    """

    name = "perceiver"
    Config = PerceiverConfig
    returns_attention = True
    provides_tokens = True

    def __init__(self, config: PerceiverConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        dim = self.out_dim = config.dim
        self.proj = nn.Linear(in_dim, dim, bias=False)                     # HistoGPT's `linear`
        self.media_pos = nn.Parameter(torch.randn(1, dim))                 # flamingo's time_pos_emb[0]
        self.latents = nn.Parameter(torch.randn(config.num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, config.dim_head, config.heads), FeedForward(dim, config.ff_mult)])
            for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        b, n, _ = feats.shape
        x = self.proj(feats) + self.media_pos                              # b n d
        latents = self.latents.expand(b, -1, -1)                           # b l d
        for attn, ff in self.layers:
            update, weights = attn(x, latents, mask)                       # b l d, b h l n+l
            latents = update + latents
            latents = ff(latents) + latents
        tokens = self.norm(latents)                                        # b l d
        embedding = tokens.mean(1) if self.config.pool == "mean" else tokens[:, 0]  # b d
        attention = weights[..., :n].mean(dim=(1, 2))                      # b n: mean over heads and latents
        token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # b l
        return AggregatorOutput(embedding=embedding, attention=attention, tokens=tokens, token_mask=token_mask)
