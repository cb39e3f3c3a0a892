"""ILRA-MIL: low-rank latent attention MIL (Xiang & Zhang, ICLR 2023, "Exploring Low-Rank Property in
Multiple Instance Learning for Whole Slide Image Classification").

Reference code: jinxixiang/low_rank_wsi, ``mil/models/ilra.py`` (MultiHeadAttention, GAB, NLP, ILRA),
``models/model_utils.py`` (initialize_weights) and ``mil/configs/config_ilra_camelyon16_imagenet.yaml``
(the hyper-parameters). Differences: docs/aggregators.md.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.nn.masking import masked_softmax


class ILRAConfig(ComponentConfig):
    hidden_dim: int = Field(256, gt=0, description="Width of the GAB blocks and of the pooling (hidden_feat).")
    num_layers: int = Field(2, gt=0, description="Stacked gated attention blocks (GAB) (num_layers).")
    heads: int = Field(8, gt=0, description="Attention heads of every attention; must divide hidden_dim (num_heads).")
    topk: int = Field(1, gt=0, description="Rank of each GAB's latent matrix and number of pooling seeds (topk).")
    ln: bool = Field(True, description="LayerNorms in every attention block (ln; true in the reference's config).")

    @model_validator(mode="after")
    def _check(self) -> "ILRAConfig":
        if self.hidden_dim % self.heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by heads ({self.heads})")
        return self


def attend(mha: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """``mha(q, k, v)`` (torch's multi-head attention, its in/out projections) with padded keys
    (``mask == False``) given weight 0 -> (output [b, m, e], weights averaged over heads [b, m, n])."""
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    q, k, v = (rearrange(F.linear(x, w, b), "b n (h d) -> b h n d", h=mha.num_heads)
               for x, w, b in ((q, w_q, b_q), (k, w_k, b_k), (v, w_v, b_v)))
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5                     # b h m n
    weights = scores.softmax(-1) if mask is None else masked_softmax(scores, mask[:, None, None, :])
    out = mha.out_proj(rearrange(weights @ v, "b h m d -> b m (h d)"))         # b m e
    return out, weights.mean(1)


class MultiHeadAttention(nn.Module):
    """The reference's block: O = LN(Q' + MHA(Q', K', V')), O = LN(O + relu(fc_o O)), O * SiLU(W Q) if gated,
    with Q' = fc_q Q, K' = fc_k K, V' = fc_v K."""

    def __init__(self, dim_q: int, dim_k: int, dim_v: int, heads: int, *, ln: bool, gated: bool = False) -> None:
        super().__init__()
        self.fc_q, self.fc_k, self.fc_v = nn.Linear(dim_q, dim_v), nn.Linear(dim_k, dim_v), nn.Linear(dim_k, dim_v)
        self.multihead_attn = nn.MultiheadAttention(dim_v, heads)
        self.ln0 = nn.LayerNorm(dim_v) if ln else nn.Identity()
        self.ln1 = nn.LayerNorm(dim_v) if ln else nn.Identity()
        self.fc_o = nn.Linear(dim_v, dim_v)
        self.gate = nn.Sequential(nn.Linear(dim_q, dim_v), nn.SiLU()) if gated else None

    def forward(self, queries: Tensor, keys: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        q = self.fc_q(queries)                                                 # b m e
        a, weights = attend(self.multihead_attn, q, self.fc_k(keys), self.fc_v(keys), mask)
        o = self.ln0(q + a)
        o = self.ln1(o + F.relu(self.fc_o(o)))                                 # b m e
        if self.gate is not None:
            o = o * self.gate(queries)
        return o, weights                                                      # b m e, b m n


class GAB(nn.Module):
    """Gated attention block (the paper's eq. 16): latents L attend to X (H = MHA(L, X)), then X attends
    to H (X' = MHA(X, H)); a low-rank proxy of self-attention, O(n * topk)."""

    def __init__(self, dim_in: int, dim_out: int, heads: int, num_inds: int, *, ln: bool) -> None:
        super().__init__()
        self.latent = nn.Parameter(torch.empty(1, num_inds, dim_out))          # low-rank matrix L
        self.project_forward = MultiHeadAttention(dim_out, dim_in, dim_out, heads, ln=ln, gated=True)
        self.project_backward = MultiHeadAttention(dim_in, dim_out, dim_out, heads, ln=ln, gated=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        latent = self.latent.expand(x.shape[0], -1, -1).to(x.dtype)           # b k e
        h, _ = self.project_forward(latent, x, mask)                           # b k e: padding never attended
        return self.project_backward(x, h, None)[0]                            # b n e (rows at padding unused)


class ILRA(Aggregator):
    """ILRA-MIL (Xiang & Zhang, 2023): ``num_layers`` GABs over the bag -> non-local pooling (NLP).

    NLP: ``topk`` learnable seeds attend to the re-embedded patches (an ungated MultiHeadAttention);
    ``embedding`` is the seeds' output, concatenated [B, topk * hidden_dim] (topk = 1: the reference's
    feature before its classifier, which is milkit's head). ``attention``: NLP's attention over the
    patches, averaged over heads and seeds (sums to 1 over real patches). Padded patches are masked
    out of every attention over patches, so padding never changes an output; batches run at once.
    Reference training (its config): Adam, lr 1e-4, cosine annealing over 100 epochs, batch size 1.
    """

    name = "ilra"
    Config = ILRAConfig
    returns_attention = True

    def __init__(self, config: ILRAConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        e, k = config.hidden_dim, config.topk
        self.out_dim = e * k
        self.gab_blocks = nn.ModuleList(GAB(in_dim if i == 0 else e, e, config.heads, k, ln=config.ln)
                                        for i in range(config.num_layers))
        self.seeds = nn.Parameter(torch.empty(1, k, e))                        # NLP's S
        self.pooling = MultiHeadAttention(e, e, e, config.heads, ln=config.ln)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's: xavier-normal Linear weights (initialize_weights), xavier-uniform latents and seeds;
        biases keep torch's defaults (Linear: uniform; MultiheadAttention: 0)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):                                       # includes each MHA's out_proj
                nn.init.xavier_normal_(m.weight)
        for p in (self.seeds, *(g.latent for g in self.gab_blocks)):
            nn.init.xavier_uniform_(p)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        x = feats                                                              # b n d
        for block in self.gab_blocks:
            x = block(x, mask)                                                 # b n e
        seeds = self.seeds.expand(x.shape[0], -1, -1).to(x.dtype)             # b k e
        pooled, weights = self.pooling(seeds, x, mask)                         # b k e, b k n
        return AggregatorOutput(embedding=pooled.flatten(1), attention=weights.mean(1))
