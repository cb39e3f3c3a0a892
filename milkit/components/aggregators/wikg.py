"""WiKG: a WSI as a knowledge graph (Li et al., CVPR 2024, "Dynamic Graph Representation with
Knowledge-aware Attention for Histopathology Whole Slide Image Analysis", arXiv:2403.07719).

Reference code: WonderLandxD/WiKG @ c1d9d7a, ``model.py`` (class WiKG) and ``train.py``; the 'attn'
readout is torch_geometric's ``GlobalAttention``. Differences: docs/aggregators.md.
"""

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.nn.masking import masked_max, masked_mean, masked_softmax


class WiKGConfig(ComponentConfig):
    dim_hidden: int = Field(512, ge=2, description="Node width after the first projection (dim_hidden).")
    topk: int = Field(6, gt=0, description="Neighbours (tails) each patch (head) links to; all in a smaller bag.")
    agg_type: Literal["bi-interaction", "gcn", "sage"] = Field(
        "bi-interaction", description="Node update from a head and its aggregated neighbours (agg_type).")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="Dropout on the updated nodes before the readout "
                           "(the reference's message_dropout).")
    pool: Literal["attn", "mean", "max"] = Field(
        "attn", description="Readout over the nodes: attention (GlobalAttention, the model's default), mean or max "
        "(train.py builds the model with 'mean').")


class WiKG(Aggregator):
    """WiKG (Li et al., 2024): patches are nodes; each links to its top-k by head-tail similarity.

    fc1 (Linear + LeakyReLU), mixed with the bag's mean node -> head and tail embeddings
    e_h, e_t -> each head picks its ``topk`` tails by scaled e_h . e_t, builds the
    neighbour-aware embedding e_r = p e_t + (1 - p) e_h (p: softmax of those similarities),
    weighs its neighbours by knowledge-aware attention against tanh(e_h + e_r) and sums them
    (e_N) -> bi-interaction update -> dropout -> readout -> LayerNorm = ``embedding``
    [B, dim_hidden]. The reference's final ``fc`` is milkit's head. Padded patches are never
    chosen as neighbours and never enter the mean or the readout. ``attention`` [B, N]: the
    readout's softmax weights when ``pool = 'attn'`` (None for 'mean'/'max').

    Defaults: the reference class's (dim_hidden 512, topk 6, bi-interaction, dropout 0.3, 'attn'),
    as its ``__main__``; ``train.py`` builds it with pool 'mean' (Adam, lr 1e-4, weight decay 1e-5).
    """

    name = "wikg"
    Config = WiKGConfig
    returns_attention = None  # attention only with pool = "attn" (the default): probed

    def __init__(self, config: WiKGConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        c = self.out_dim = config.dim_hidden
        self.fc1 = nn.Sequential(nn.Linear(in_dim, c), nn.LeakyReLU())
        self.W_head, self.W_tail = nn.Linear(c, c), nn.Linear(c, c)
        self.scale = c ** -0.5
        # the reference also builds gate_U, gate_V and gate_W, which its forward never uses: left out
        if config.agg_type == "bi-interaction":
            self.linear1, self.linear2 = nn.Linear(c, c), nn.Linear(c, c)
        else:
            self.linear = nn.Linear(2 * c if config.agg_type == "sage" else c, c)
        self.activation = nn.LeakyReLU()
        self.message_dropout = nn.Dropout(config.dropout)
        self.att_net = (nn.Sequential(nn.Linear(c, c // 2), nn.LeakyReLU(), nn.Linear(c // 2, 1))
                        if config.pool == "attn" else None)
        self.norm = nn.LayerNorm(c)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        b, n, _ = feats.shape
        x = self.fc1(feats)                                                    # b n c
        x = (x + masked_mean(x, mask)[:, None]) * 0.5                          # b n c: mixed with the mean real node
        e_h, e_t = self.W_head(x), self.W_tail(x)                              # b n c
        logits = (e_h * self.scale) @ e_t.transpose(-2, -1)                    # b n n: head i -> tail j
        logits = logits.masked_fill(~mask[:, None, :], torch.finfo(logits.dtype).min)
        topk_weight, topk_index = logits.topk(min(self.config.topk, n), dim=-1)  # b n k
        rows = torch.arange(b, device=feats.device)[:, None, None]
        nb_h, real = e_t[rows, topk_index], mask[rows, topk_index]              # b n k c, b n k: padding never counts
        topk_prob = masked_softmax(topk_weight, real)                          # b n k
        eh_r = topk_prob[..., None] * nb_h + (1 - topk_prob)[..., None] * e_h[:, :, None]  # b n k c
        gate = torch.tanh(e_h[:, :, None] + eh_r)                              # b n k c
        ka_weight = nb_h.sum(-1) * gate.sum(-1)                                # b n k: the reference's einsum (docs)
        e_nh = torch.einsum("bnk,bnkc->bnc", masked_softmax(ka_weight, real), nb_h)  # b n c
        h = self.message_dropout(self._update(e_h, e_nh))                      # b n c
        attention = None
        if self.att_net is not None:
            attention = masked_softmax(self.att_net(h).squeeze(-1), mask)      # b n
            pooled = torch.einsum("bn,bnc->bc", attention, h)
        else:
            pooled = masked_mean(h, mask) if self.config.pool == "mean" else masked_max(h, mask)  # b c
        return AggregatorOutput(embedding=self.norm(pooled), attention=attention)

    def _update(self, e_h: Tensor, e_nh: Tensor) -> Tensor:
        """The reference's agg_type: 'gcn', 'sage' or 'bi-interaction' node update, [B, N, C] each."""
        act, kind = self.activation, self.config.agg_type
        if kind == "gcn":
            return act(self.linear(e_h + e_nh))
        if kind == "sage":
            return act(self.linear(torch.cat([e_h, e_nh], dim=-1)))
        return act(self.linear1(e_h + e_nh)) + act(self.linear2(e_h * e_nh))
