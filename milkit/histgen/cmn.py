"""HistGen's cross-modal context module: one shared memory queried with top-k attention.

Reference: ``MultiThreadMemory`` / ``memory_querying_responding`` in HistGen's
``modules/histgen_module.py`` (from R2GenCMN, Chen et al., ACL 2021). The reference
expands the values to [b, h, q, M, dk] and gathers a [b, h, q, k, dk] tensor (its backward
allocates a dense zero gradient of the expanded shape: 2.15 GB for 512 visual queries).
Here the k softmax weights are scattered into a dense [b, h, q, M] matrix and multiplied
with the values: the same numbers, M/(k*dk) of the memory (1/16 at k = 512, dk = 64).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def topk_memory_attention(q: Tensor, k: Tensor, v: Tensor, topk: int, dropout: nn.Module | None = None) -> Tensor:
    """Attention of each query to its ``topk`` best-scoring memory slots only.

    Args:
        q: queries [b, h, q, dk].
        k, v: memory keys and values [h, M, dk] (shared by the batch) or [b, h, M, dk].
        topk: slots kept per query (softmax over those only).
        dropout: applied to the top-k weights (training).

    Returns:
        [b, h, q, dk].
    """
    if k.dim() == 3:                                                 # shared memory: fold b into the queries
        b, h, nq, dk = q.shape
        out = _topk_attention(q.transpose(0, 1).reshape(h, b * nq, dk), k, v, topk, dropout)   # h (b q) dk
        return out.view(h, b, nq, dk).transpose(0, 1)
    return _topk_attention(q, k, v, topk, dropout)


def _topk_attention(q: Tensor, k: Tensor, v: Tensor, topk: int, dropout: nn.Module | None) -> Tensor:
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])        # ... q M
    if topk >= scores.shape[-1]:                                     # every slot kept: plain attention
        p = torch.softmax(scores, dim=-1)
        return (dropout(p) if dropout is not None else p) @ v
    top, idx = scores.topk(topk, dim=-1)                             # ... q k
    p = torch.softmax(top, dim=-1)
    if dropout is not None:
        p = dropout(p)
    dense = scores.new_zeros(scores.shape, dtype=p.dtype).scatter(-1, idx, p)   # ... q M, k non-zeros per row
    return dense @ v                                                 # ... q dk


class CrossModalMemory(nn.Module):
    """Memory matrix [M, dim] + multi-head top-k memory attention (HistGen's CMN).

    The same instance serves the visual path (prototype queries, in the ``histgen``
    aggregator) and the text path (token embeddings, in the ``report`` head).
    """

    def __init__(self, dim: int, slots: int, heads: int, topk: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"cmm_dim ({dim}) must be divisible by num_heads ({heads})")
        if not 1 <= topk:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.dim, self.slots, self.heads, self.topk = dim, slots, heads, topk
        self.memory = nn.Parameter(torch.empty(slots, dim))
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.memory, 0.0, 1.0 / dim)                 # HistGen: std = 1 / cmm_dim
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)                       # HistGen: Xavier inside its Transformer

    def project_memory(self) -> tuple[Tensor, Tensor]:
        """Keys and values of the memory, [h, M, dk] each (cache them while decoding)."""
        k = self.k_proj(self.memory).unflatten(-1, (self.heads, -1)).transpose(0, 1)   # h M dk
        v = self.v_proj(self.memory).unflatten(-1, (self.heads, -1)).transpose(0, 1)   # h M dk
        return k, v

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Memory responses for queries ``x`` [b, q, dim] -> [b, q, dim] (per query, no mixing)."""
        k, v = memory_kv if memory_kv is not None else self.project_memory()
        q = self.q_proj(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)               # b h q dk
        out = topk_memory_attention(q, k.to(q.dtype), v.to(q.dtype), self.topk, self.dropout if self.training else None)
        return self.out_proj(out.transpose(1, 2).flatten(2))                            # b q dim


def reference_topk_attention(q: Tensor, k: Tensor, v: Tensor, topk: int) -> Tensor:
    """HistGen's expand + gather formulation (for tests and benchmarks only; memory-hungry).

    q [b,h,q,dk]; k, v [b,h,M,dk] -> [b,h,q,dk].
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    top, idx = scores.topk(topk)
    big_v = v.unsqueeze(2).expand(idx.size(0), idx.size(1), idx.size(2), v.size(-2), v.size(-1))
    big_idx = idx.unsqueeze(-1).expand(idx.size(0), idx.size(1), idx.size(2), idx.size(3), v.size(-1))
    selected = torch.gather(big_v, 3, big_idx)                       # b h q k dk
    p = F.softmax(top, dim=-1)
    return (p.unsqueeze(3) @ selected).squeeze(3)
