"""Minimal port of lucidrains' Perceiver resampler (and HistoGPT's wrapper of it), for parity tests only.

Ported from lucidrains/flamingo-pytorch @ 0e1a915 (MIT License, Copyright (c) 2022 Phil Wang),
``flamingo_pytorch/flamingo_pytorch.py``: FeedForward, PerceiverAttention, PerceiverResampler, reference
names kept; and from marrlab/HistoGPT @ 1017667, ``histogpt/models/histogpt.py``: its PerceiverResampler
(renamed HistoGPTPerceiverResampler here), which puts Linear(dim_feats, dim_model, bias=False) and a
media embedding in front of lucidrains' PerceiverAttention / FeedForward blocks.

Changes from upstream, none affecting the numbers: einops_exts' ``rearrange_many`` is spelled as one
``rearrange`` per tensor (einops_exts is not a dependency); PerceiverAttention keeps its last attention
weights in ``self.attn`` (as HistoGPT's MaskedCrossAttention does) so tests can read them; HistoGPT's
``x.float()`` cast is left out (the tests run in float32).
"""

import torch
from torch import nn, einsum
from einops import rearrange, repeat


def FeedForward(dim, mult = 4):
    inner_dim = int(dim * mult)
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner_dim, bias = False),
        nn.GELU(),
        nn.Linear(inner_dim, dim, bias = False)
    )


class PerceiverAttention(nn.Module):
    def __init__(
        self,
        *,
        dim,
        dim_head = 64,
        heads = 8
    ):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        inner_dim = dim_head * heads

        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)

        self.to_q = nn.Linear(dim, inner_dim, bias = False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias = False)
        self.to_out = nn.Linear(inner_dim, dim, bias = False)
        self.attn = None

    def forward(self, x, latents):
        x = self.norm_media(x)
        latents = self.norm_latents(latents)

        b, m, h = *x.shape[:2], self.heads

        q = self.to_q(latents)

        # the paper differs from Perceiver in which they also concat the key / values derived from the latents to be attended to
        kv_input = torch.cat((x, latents), dim = -2)
        k, v = self.to_kv(kv_input).chunk(2, dim = -1)

        q, k, v = (rearrange(t, 'b t n (h d) -> b h t n d', h = h) for t in (q, k, v))

        q = q * self.scale

        # attention

        sim = einsum('... i d, ... j d  -> ... i j', q, k)

        sim = sim - sim.amax(dim = -1, keepdim = True).detach()
        attn = sim.softmax(dim = -1)
        self.attn = attn

        out = einsum('... i j, ... j d -> ... i d', attn, v)
        out = rearrange(out, 'b h t n d -> b t n (h d)', h = h)
        return self.to_out(out)


class PerceiverResampler(nn.Module):
    def __init__(
        self,
        *,
        dim,
        depth,
        dim_head = 64,
        heads = 8,
        num_latents = 64,
        num_time_embeds = 4,
        ff_mult = 4
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.time_pos_emb = nn.Parameter(torch.randn(num_time_embeds, 1, dim))

        self.layers = nn.ModuleList([])
        for _ in range(depth):
            self.layers.append(nn.ModuleList([
                PerceiverAttention(dim = dim, dim_head = dim_head, heads = heads),
                FeedForward(dim = dim, mult = ff_mult)
            ]))

        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        if x.ndim == 3:
            x = rearrange(x, 'b n d -> b 1 n d')

        times = x.shape[1]
        x = x + self.time_pos_emb[:times]

        latents = repeat(self.latents, 'n d -> b m n d', b = x.shape[0], m = x.shape[1])

        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents

        return self.norm(latents)


class HistoGPTPerceiverResampler(nn.Module):
    """HistoGPT's PerceiverResampler (histogpt/models/histogpt.py), on lucidrains' blocks."""
    def __init__(
        self,
        dim_feats: int,
        dim_model: int,
        dim_head: int,
        num_heads: int,
        num_layers: int,
        num_latents: int,
        num_media: int = 1,
        ffwn_mult: int = 4
    ):
        super().__init__()
        self.linear = nn.Linear(dim_feats, dim_model, bias=False)
        self.media_pos = nn.Parameter(torch.randn(num_media, 1, dim_model))
        self.latents = nn.Parameter(torch.randn(num_latents, dim_model))

        self.layers = nn.ModuleList([])
        for _ in range(num_layers):
            self.layers.append(
                nn.ModuleList(
                    [
                        PerceiverAttention(
                            dim=dim_model, dim_head=dim_head, heads=num_heads
                        ),
                        FeedForward(dim=dim_model, mult=ffwn_mult)
                    ]
                )
            )

        self.norm = nn.LayerNorm(dim_model)

    def forward(self, x: torch.Tensor):
        x = self.linear(x)

        x = x.unsqueeze(1) if x.ndim == 3 else x
        b, m, _, _ = x.size()

        x = x + self.media_pos[:m]
        latents = self.latents.repeat(b, m, 1, 1)

        for attn, ffwn in self.layers:
            latents = latents + attn(x, latents)
            latents = latents + ffwn(latents)

        return self.norm(latents)
