"""HistGen's local-global hierarchical encoder (``HATEncoder``), batched over packed regions.

Each region holds ``S - 1`` patch slots plus one learned region token (last position).
Layer 0: region self-attention, then a slide-level ("WSI") layer over one token per
region, written back; layer 1: region self-attention. Then layer norm, attentive pooling
per region, ``tanh(dense(.))``: one vector per region.

``faithful=True`` reproduces the published code: the WSI layer reads and writes slot 0 (the
first *patch*, so the region token never reaches it), the positional encoding is added
again in layer 1, pooling runs over padded slots too, and the never-used modules are
present (``unused.*``) so parameter counts and checkpoints match.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from milkit.histgen.blocks import FeedForward, HistGenLayerNorm, MultiHeadAttention, TransformerLayer, add_pe
from milkit.histgen.regions import RegionLayout
from milkit.nn.masking import masked_softmax


@dataclass
class EncodedRegions:
    """Region vectors [B, R, d] + mask [B, R], and per-slot pooling weights [R_tot, S - 1]."""

    tokens: Tensor
    token_mask: Tensor
    slot_weights: Tensor


class HATEncoder(nn.Module):
    """Two-layer local-global encoder over regions of ``region_size - 1`` patches + 1 token."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, region_size: int, *, faithful: bool) -> None:
        super().__init__()
        self.dim, self.region_size, self.faithful = dim, region_size, faithful
        self.region_token = nn.Parameter(torch.empty(dim))
        self.region_layers = nn.ModuleList(TransformerLayer(dim, heads, ff_dim, dropout) for _ in range(2))
        self.wsi_layer = TransformerLayer(dim, heads, ff_dim, dropout)
        self.norm = HistGenLayerNorm(dim)
        self.pool_proj = nn.Linear(dim, dim)
        self.pool_score = nn.Linear(dim, 1, bias=False)
        self.pool_dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        if faithful:  # registered but never called upstream (spec §2.8 item 2)
            max_region = -(-100_000 // region_size)
            self.unused = nn.ModuleDict({
                "attn0": MultiHeadAttention(dim, heads, dropout), "ff0": FeedForward(dim, ff_dim, dropout),
                "attn1": MultiHeadAttention(dim, heads, dropout), "ff1": FeedForward(dim, ff_dim, dropout),
                "position_embeddings": nn.Embedding(max_region + 1, dim, padding_idx=0),
            })
            self.unused_global_token1 = nn.Parameter(torch.zeros(dim))
            self.unused.requires_grad_(False)                          # never receive gradients upstream either
            self.unused_global_token1.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform for every matrix (HistGen's init), default init for the rest."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
                elif "token" in name:                                  # stored upstream as [1, 1, d]
                    nn.init.xavier_uniform_(p.view(1, 1, -1))

    def forward(self, h: Tensor, layout: RegionLayout) -> EncodedRegions:
        """h [B, N, d] patch tokens -> region vectors, using ``layout`` to form the regions."""
        b, n, d = h.shape
        slots = h.reshape(b * n, d)[layout.patch_index]               # r l d (r = packed regions)
        slots = slots * layout.slot_mask[..., None].to(slots.dtype)   # empty slots are zeros
        token = self.region_token.to(h.dtype).expand(slots.shape[0], 1, d)
        x = torch.cat([slots, token], dim=1)                          # r s d, token last
        key_mask = torch.cat([layout.slot_mask, layout.slot_mask.new_ones(slots.shape[0], 1)], dim=1)  # r s
        wsi = 0 if self.faithful else self.region_size - 1            # slot read by the WSI layer

        x = self.region_layers[0](self.dropout(add_pe(x)), key_mask)
        g = x.new_zeros(b, layout.region_mask.shape[1], d)
        g[layout.region_batch, layout.region_pos] = x[:, wsi]         # b R d
        g = self.wsi_layer(self.dropout(add_pe(g)), layout.region_mask)
        x = torch.cat([x[:, :wsi], g[layout.region_batch, layout.region_pos][:, None], x[:, wsi + 1:]], dim=1)
        if self.faithful:                                             # upstream adds the PE again
            x = self.dropout(add_pe(x))
        x = self.norm(self.region_layers[1](x, key_mask))             # r s d

        score = torch.tanh(self.pool_score(self.pool_proj(x))).squeeze(-1)  # r s
        w = torch.softmax(score, -1) if self.faithful else masked_softmax(score, key_mask)
        pooled = torch.tanh(self.pool_dense((w[..., None] * x).sum(1)))     # r d
        tokens = pooled.new_zeros(b, layout.region_mask.shape[1], d)
        tokens[layout.region_batch, layout.region_pos] = pooled
        return EncodedRegions(tokens, layout.region_mask, w[:, :-1])
