"""HistGen's report decoder: pre-norm transformer over token embeddings + memory responses.

``forward`` is the teacher-forced pass (training, scoring). ``start`` / ``step`` decode one
token at a time with a key/value cache per layer; the text memory response is per-position,
so only the new token's response is computed (the reference recomputes the whole prefix).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from milkit.histgen.blocks import FeedForward, HistGenLayerNorm, MultiHeadAttention, add_pe, any_key
from milkit.histgen.cmn import CrossModalMemory


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the region tokens, FFN (all pre-norm)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout)
        self.ffn = FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2, self.norm3 = (HistGenLayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, self_mask: Tensor, memory_mask: Tensor) -> Tensor:
        """x [b, t, d]; memory [b, r, d]; masks broadcastable to [b, h, t, t] / [b, h, t, r]."""
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, self_mask))
        x = x + self.dropout(self.cross_attn(self.norm2(x), memory, memory, memory_mask))
        return x + self.dropout(self.ffn(self.norm3(x)))


@dataclass
class DecodeState:
    """Incremental-decoding cache for ``rows`` sequences (one per slide, or per beam)."""

    self_k: list[Tensor]        # per layer [rows, h, max_len, dk]
    self_v: list[Tensor]
    cross_k: list[Tensor]       # per layer [rows, h, r, dk]
    cross_v: list[Tensor]
    cross_mask: Tensor          # [rows, 1, 1, r]
    memory_kv: tuple[Tensor, Tensor]
    length: int = 0

    def reorder(self, index: Tensor) -> None:
        """Keep row ``index[i]`` as row i (beam search); rows stay within their slide."""
        t = self.length
        for cache in (self.self_k, self.self_v):
            for i, c in enumerate(cache):
                cache[i][:, :, :t] = c[:, :, :t].index_select(0, index)


class ReportDecoder(nn.Module):
    """Token embedding (x sqrt(d)) + PE + memory response, N decoder layers, logits over V + 1."""

    def __init__(self, vocab: int, dim: int, heads: int, ff_dim: int, layers: int, dropout: float,
                 cmn: CrossModalMemory, *, in_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(vocab + 1, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ff_dim, dropout) for _ in range(layers))
        self.norm = HistGenLayerNorm(dim)
        self.logit = nn.Linear(dim, vocab + 1)
        self.dropout = nn.Dropout(dropout)
        self.memory_proj = nn.Identity() if in_dim == dim else nn.Linear(in_dim, dim)
        self.cmn = cmn
        with torch.no_grad():  # HistGen: Xavier on every matrix of its Transformer
            for p in [*self.embed.parameters(), *self.layers.parameters()]:
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def embed_tokens(self, ids: Tensor, start: int, memory_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """ids [b, t] at positions start.. -> E + CMN(E) [b, t, d]."""
        e = self.dropout(add_pe(self.embed(ids) * math.sqrt(self.dim), start))
        return e + self.cmn(e, memory_kv)

    def forward(self, ids: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """Teacher-forced log-probs [b, t, V + 1] for inputs ``ids`` [b, t] (starting with BOS = 0)."""
        t = ids.shape[1]
        memory = self.memory_proj(memory)
        keys = ids > 0
        keys[:, 0] = True                                             # BOS (id 0) at position 0 is valid
        causal = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()
        self_mask = (causal[None] & keys[:, None, :])[:, None]        # b 1 t t
        memory_mask = any_key(memory_mask)[:, None, None, :]          # b 1 1 r
        x = self.embed_tokens(ids, 0)
        for layer in self.layers:
            x = layer(x, memory, self_mask, memory_mask)
        return F.log_softmax(self.logit(self.norm(x)), dim=-1)

    def start(self, memory: Tensor, memory_mask: Tensor, repeat: int, max_len: int) -> DecodeState:
        """Cache for ``b * repeat`` rows (row ``i * repeat + j`` decodes slide i)."""
        memory = self.memory_proj(memory)
        rows = memory.shape[0] * repeat
        cross_k, cross_v, self_k, self_v = [], [], [], []
        for layer in self.layers:
            a = layer.cross_attn
            cross_k.append(a.split(a.k_proj(memory)).repeat_interleave(repeat, 0))
            cross_v.append(a.split(a.v_proj(memory)).repeat_interleave(repeat, 0))
            h, dk = cross_k[-1].shape[1], cross_k[-1].shape[3]
            self_k.append(memory.new_zeros(rows, h, max_len, dk))
            self_v.append(memory.new_zeros(rows, h, max_len, dk))
        mask = any_key(memory_mask).repeat_interleave(repeat, 0)[:, None, None, :]
        return DecodeState(self_k, self_v, cross_k, cross_v, mask, self.cmn.project_memory())

    def step(self, state: DecodeState, ids: Tensor) -> Tensor:
        """Feed one token per row (``ids`` [rows]) -> log-probs of the next token [rows, V + 1]."""
        t = state.length
        x = self.embed_tokens(ids[:, None], t, state.memory_kv)      # rows 1 d
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            h = layer.norm1(x)
            state.self_k[i][:, :, t] = sa.split(sa.k_proj(h))[:, :, 0]
            state.self_v[i][:, :, t] = sa.split(sa.v_proj(h))[:, :, 0]
            q = sa.split(sa.q_proj(h))
            x = x + layer.dropout(sa.attend(q, state.self_k[i][:, :, : t + 1], state.self_v[i][:, :, : t + 1], None))
            ca = layer.cross_attn
            q = ca.split(ca.q_proj(layer.norm2(x)))
            x = x + layer.dropout(ca.attend(q, state.cross_k[i], state.cross_v[i], state.cross_mask))
            x = x + layer.dropout(layer.ffn(layer.norm3(x)))
        state.length = t + 1
        return F.log_softmax(self.logit(self.norm(x[:, 0])), dim=-1)
