"""Minimal port of Prov-GigaPath's slide encoder (LongNetViT over torchscale's LongNet encoder), for parity
tests only.

Ported from prov-gigapath/prov-gigapath (Apache-2.0): ``gigapath/slide_encoder.py`` (``PatchEmbed``,
``LongNetViT``), ``gigapath/pos_embed.py`` (``get_2d_sincos_pos_embed`` and helpers),
``gigapath/torchscale/architecture/encoder.py`` (``EncoderLayer``, ``Encoder``) and, vendored there from
microsoft/torchscale (MIT), ``component/dilated_attention.py`` (``DilatedAttention``),
``component/multihead_attention.py`` (``MultiheadAttention.__init__``, ``attention_ops``),
``component/feedforward_network.py`` (``FeedForwardNetwork``), ``component/utils.py``
(``padding_to_multiple_of``), ``architecture/config.py`` (``EncoderConfig`` defaults).

Changes from upstream, none affecting the numbers: flash-attn's ``flash_attn_func(..., return_attn_probs=True)``
is replaced by an explicit float32 softmax returning the same (output, log-sum-exp) pair; ``make_longnet_from_name``
takes the LongNet numbers as arguments instead of a named config (so the tests can shrink the model); the
branches never taken with these settings (MoE, multiway, deepnorm, xpos, relative positions, incremental
decoding, key padding masks, sequence-parallel ``gather_kv``, fairscale checkpointing) are left out; timm's
``drop_path`` is inlined.
"""

import math
from functools import partial
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


# --- gigapath/pos_embed.py ------------------------------------------------------------------------
def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)
    grid = grid.reshape([2, 1, grid_size, grid_size])
    pos_embed = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    assert embed_dim % 2 == 0
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])  # (H*W, D/2)
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])  # (H*W, D/2)
    emb = np.concatenate([emb_h, emb_w], axis=1)  # (H*W, D)
    return emb


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=float)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega  # (D/2,)
    pos = pos.reshape(-1)  # (M,)
    out = np.einsum("m,d->md", pos, omega)  # (M, D/2), outer product
    emb_sin = np.sin(out)  # (M, D/2)
    emb_cos = np.cos(out)  # (M, D/2)
    emb = np.concatenate([emb_sin, emb_cos], axis=1)  # (M, D)
    return emb


# --- torchscale components ------------------------------------------------------------------------
def padding_to_multiple_of(n, mult):
    remainder = n % mult
    if remainder == 0:
        return 0
    return mult - remainder


def drop_path(x, drop_prob: float = 0.0, training: bool = False):  # timm.models.layers.drop_path
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)
    random_tensor.floor_()
    return x.div(keep_prob) * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob=None):
        super(DropPath, self).__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)


def flash_attn_func(q, k, v, dropout=0.0, bias=None, softmax_scale=None, is_causal=False):
    """flash-attn's (output [b, l, h, d], softmax_lse [b, h, l]) for q, k, v [b, l, h, d], computed explicitly."""
    assert bias is None and dropout == 0.0 and not is_causal
    scale = softmax_scale or q.shape[-1] ** -0.5
    s = torch.einsum("blhd,bmhd->bhlm", q.float(), k.float()) * scale
    lse = torch.logsumexp(s, dim=-1)
    attn = torch.einsum("bhlm,bmhd->blhd", torch.softmax(s, dim=-1), v.float()).type_as(q)
    return attn, lse


class FeedForwardNetwork(nn.Module):
    def __init__(self, embed_dim, ffn_dim, activation_fn, dropout, activation_dropout, layernorm_eps, subln=False):
        super().__init__()
        self.embed_dim = embed_dim
        self.activation_fn = F.gelu
        self.activation_dropout_module = torch.nn.Dropout(activation_dropout)
        self.dropout_module = torch.nn.Dropout(dropout)
        self.fc1 = nn.Linear(self.embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, self.embed_dim)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim, eps=layernorm_eps) if subln else None

    def forward(self, x):
        x_shape = x.shape
        x = x.reshape(-1, x.size(-1))
        x = self.fc1(x)
        x = self.activation_fn(x.float()).type_as(x)
        x = self.activation_dropout_module(x)
        if self.ffn_layernorm is not None:
            x = self.ffn_layernorm(x)
        x = self.fc2(x)
        x = x.view(x_shape)
        x = self.dropout_module(x)
        return x


class MultiheadAttention(nn.Module):
    def __init__(self, args, embed_dim, num_heads, dropout=0.0, self_attention=False,
                 encoder_decoder_attention=False, subln=False):
        super().__init__()
        self.args = args
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.self_attention = self_attention
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.inner_attn_ln = nn.LayerNorm(self.embed_dim, eps=args.layernorm_eps) if subln and self_attention else None
        self.dropout_module = torch.nn.Dropout(dropout)
        self.xpos = None

    def attention_ops(self, q, k, v, key_padding_mask=None, attn_mask=None, rel_pos=None, is_causal=False):
        assert self.args.flash_attention
        q = rearrange(q, '(b h) l d -> b l h d', h=self.num_heads)
        k = rearrange(k, '(b h) l d -> b l h d', h=self.num_heads)
        v = rearrange(v, '(b h) l d -> b l h d', h=self.num_heads)
        attn, lse = flash_attn_func(q, k, v, self.dropout, None, None, is_causal)
        attn = rearrange(attn, 'b l h d -> b l (h d)')
        attn_weights = lse[:, :, :attn.size(1)]
        return attn, attn_weights


class DilatedAttention(MultiheadAttention):
    def dense_to_sparse(self, x, ratio):
        length = x.size(1)
        padding = padding_to_multiple_of(length, ratio)
        head_padding = padding_to_multiple_of(self.num_heads, ratio)
        if padding > 0 or head_padding > 0:
            x = F.pad(x, (0, 0, 0, head_padding, 0, padding), value=0.)
        x = rearrange(x, 'b (l r1) (r2 h) d -> b l h d r1 r2', r1=ratio, r2=ratio)
        x = torch.diagonal(x, offset=0, dim1=4, dim2=5)
        x = rearrange(x, 'b l h d r -> b l (r h) d')
        if head_padding > 0:
            x = x[:, :, :self.num_heads]
        return x

    def sparse_to_dense(self, out, lse, ratio):
        head_padding = padding_to_multiple_of(self.num_heads, ratio)
        if head_padding > 0:
            out = F.pad(out, (0, 0, 0, head_padding), value=0.)
            lse = F.pad(lse, (0, 0, 0, head_padding), value=-1e8)
        out = rearrange(out, 'b l (r h) d -> b l h d r', r=ratio)
        out = torch.diag_embed(out, offset=0, dim1=4, dim2=5)
        out = rearrange(out, 'b l h d r1 r2 -> b (r2 h) (l r1) d', r1=ratio, r2=ratio)
        lse = rearrange(lse, 'b (r h) l -> b l h r', r=ratio)
        lse = torch.diag_embed(lse, offset=0, dim1=3, dim2=4)
        lse = lse.masked_fill_(lse == 0, -1e8)
        lse = rearrange(lse, 'b l h r1 r2 -> b (r2 h) (l r1) 1', r1=ratio, r2=ratio)
        if head_padding > 0:
            out = out[:, :self.num_heads]
            lse = lse[:, :self.num_heads]
        return out, lse

    def gathering(self, x, dr, sl, is_causal=True, offset=0, is_kv=False, seq_parall=True):
        curr_x = x
        if offset > 0:
            curr_x = F.pad(curr_x, (0, 0, 0, 0, offset % sl, 0), value=0.)
        seq_len = curr_x.size(1)
        sl = min(sl, seq_len)
        padding = padding_to_multiple_of(seq_len, sl)
        if padding > 0:
            curr_x = F.pad(curr_x, (0, 0, 0, 0, 0, padding), value=0.)
        curr_x = rearrange(curr_x, 'b (n g) h d -> (b n) g h d', g=sl)
        curr_x = self.dense_to_sparse(curr_x, dr)
        curr_x = rearrange(curr_x, 'b l h d -> (b h) l d')
        return curr_x

    def scattering(self, outs, lses, seq_len, bsz, offset=0):
        assert len(outs) == len(lses)
        assert len(outs) % len(self.args.dilated_ratio) == 0
        all_outs, all_lses = [], []
        drs = self.args.dilated_ratio
        if len(outs) > len(drs):
            drs = drs * (len(outs) // len(drs))
        for dr, o, lse in zip(drs, outs, lses):
            o = rearrange(o, 'b l (h d) -> b l h d', h=self.num_heads)
            o, lse = self.sparse_to_dense(o, lse, dr)
            o = rearrange(o, '(b n) h g d -> (b h) (n g) d', b=bsz)
            lse = rearrange(lse, '(b n) h g 1 -> (b h) (n g) 1', b=bsz)
            o = o[:, offset:offset + seq_len]
            lse = lse[:, offset:offset + seq_len]
            all_outs.append(o)
            all_lses.append(lse)
        with torch.no_grad():
            max_lse = torch.stack(all_lses, dim=0)
            max_lse = max_lse.max(0)[0]
            all_lses = [torch.exp(lse - max_lse) for lse in all_lses]
            lse_sum = torch.stack(all_lses, dim=0).sum(0)
            all_lses = [lse / lse_sum for lse in all_lses]
        out = 0
        for o, lse in zip(all_outs, all_lses):
            out += o * lse.type_as(o)
        out = rearrange(out, '(b h) l d -> b l (h d)', h=self.num_heads)
        return out

    def forward(self, query, key, value, incremental_state=None, key_padding_mask=None, attn_mask=None,
                rel_pos=None, is_first_step=False, is_causal=False):
        assert self.args.flash_attention
        assert rel_pos is None
        bsz, tgt_len, embed_dim = query.size()
        q = self.q_proj(query)
        k = self.k_proj(key)
        v = self.v_proj(value)
        q = rearrange(q, 'b l (h d) -> (b h) l d', h=self.num_heads)
        k = rearrange(k, 'b l (h d) -> (b h) l d', h=self.num_heads)
        v = rearrange(v, 'b l (h d) -> (b h) l d', h=self.num_heads)
        offset = 0
        q = rearrange(q, '(b h) l d -> b l h d', h=self.num_heads)
        k = rearrange(k, '(b h) l d -> b l h d', h=self.num_heads)
        v = rearrange(v, '(b h) l d -> b l h d', h=self.num_heads)
        outs, lses = [], []
        for sl, dr in zip(self.args.segment_length, self.args.dilated_ratio):
            ki = self.gathering(k, dr, sl, is_causal=is_causal, offset=0, is_kv=True, seq_parall=self.args.seq_parallel)
            vi = self.gathering(v, dr, sl, is_causal=is_causal, offset=0, is_kv=True, seq_parall=self.args.seq_parallel)
            qi = self.gathering(q, dr, sl, is_causal=is_causal, offset=offset, is_kv=False,
                                seq_parall=self.args.seq_parallel)
            out, lse = self.attention_ops(qi, ki, vi, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                          rel_pos=rel_pos, is_causal=is_causal)
            outs.append(out)
            lses.append(lse)
        attn = self.scattering(outs, lses, tgt_len, bsz, offset=offset)
        if self.inner_attn_ln is not None:
            attn = self.inner_attn_ln(attn)
        attn = self.out_proj(attn)
        return attn, None


# --- gigapath/torchscale/architecture/encoder.py (LongNetEncoderLayer: DilatedAttention) -------------------
class EncoderLayer(nn.Module):
    def __init__(self, args, depth):
        super().__init__()
        self.args = args
        self.embed_dim = args.encoder_embed_dim
        self.self_attn = DilatedAttention(args, self.embed_dim, args.encoder_attention_heads,
                                          dropout=args.attention_dropout, self_attention=True, subln=args.subln)
        self.self_attn_layer_norm = nn.LayerNorm(self.embed_dim, eps=args.layernorm_eps)
        self.dropout_module = torch.nn.Dropout(args.dropout)
        if args.drop_path_rate > 0:
            drop_path_prob = np.linspace(0, args.drop_path_rate, args.encoder_layers)[depth]
            self.drop_path = DropPath(drop_path_prob)
        else:
            self.drop_path = None
        self.normalize_before = args.encoder_normalize_before
        self.ffn = FeedForwardNetwork(self.embed_dim, args.encoder_ffn_embed_dim, args.activation_fn, args.dropout,
                                      args.activation_dropout, args.layernorm_eps, args.subln)
        self.final_layer_norm = nn.LayerNorm(self.embed_dim, eps=args.layernorm_eps)
        self.alpha = 1.0

    def residual_connection(self, x, residual):
        return residual * self.alpha + x

    def forward(self, x, encoder_padding_mask, attn_mask=None, rel_pos=None):
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x, _ = self.self_attn(query=x, key=x, value=x, key_padding_mask=encoder_padding_mask, attn_mask=attn_mask,
                              rel_pos=rel_pos)
        x = self.dropout_module(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        x = self.residual_connection(x, residual)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)
        residual = x
        if self.normalize_before:
            x = self.final_layer_norm(x)
        x = self.ffn(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        x = self.residual_connection(x, residual)
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        return x, None


class Encoder(nn.Module):
    def __init__(self, args):
        self.args = args
        super().__init__()
        self.dropout_module = torch.nn.Dropout(args.dropout)
        self.embed_scale = 1.0 if args.no_scale_embedding else math.sqrt(args.encoder_embed_dim)
        self.layers = nn.ModuleList([EncoderLayer(args, depth=i) for i in range(args.encoder_layers)])
        if args.encoder_normalize_before and args.normalize_output:
            self.layer_norm = nn.LayerNorm(args.encoder_embed_dim, eps=args.layernorm_eps)
        else:
            self.layer_norm = None

    def forward(self, src_tokens, encoder_padding_mask=None, return_all_hiddens=False, token_embeddings=None):
        if encoder_padding_mask is None:
            encoder_padding_mask = torch.zeros([token_embeddings.size(0), token_embeddings.size(1)],
                                               device=token_embeddings.device).bool()
        x = self.embed_scale * token_embeddings
        x = self.dropout_module(x)
        x = x * (1 - encoder_padding_mask.unsqueeze(-1).type_as(x))
        encoder_states = []
        if return_all_hiddens:
            encoder_states.append(x)
        for layer in self.layers:
            x, _ = layer(x, encoder_padding_mask=encoder_padding_mask)
            if return_all_hiddens:
                encoder_states.append(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return {"encoder_out": x, "encoder_states": encoder_states}


def make_longnet(encoder_layers, encoder_embed_dim, encoder_ffn_embed_dim, encoder_attention_heads, dilated_ratio,
                 segment_length, drop_path_rate=0.1, dropout=0.1):
    """make_longnet_from_name with the named config's numbers as arguments; the rest EncoderConfig's defaults."""
    args = SimpleNamespace(
        encoder_layers=encoder_layers, encoder_embed_dim=encoder_embed_dim, encoder_ffn_embed_dim=encoder_ffn_embed_dim,
        encoder_attention_heads=encoder_attention_heads, dilated_ratio=list(dilated_ratio),
        segment_length=list(segment_length), flash_attention=True, seq_parallel=False, dropout=dropout,
        drop_path_rate=drop_path_rate, attention_dropout=0.0, activation_dropout=0.0, activation_fn="gelu",
        layernorm_eps=1e-5, subln=True, encoder_normalize_before=True, normalize_output=True,
        no_scale_embedding=True)
    return Encoder(args)


# --- gigapath/slide_encoder.py ---------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, in_chans=1536, embed_dim=768, norm_layer=None, bias=True):
        super().__init__()
        self.proj = nn.Linear(in_chans, embed_dim, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x))


class LongNetViT(nn.Module):
    def __init__(self, in_chans=1536, embed_dim=768, depth=12, slide_ngrids=1000, tile_size=256, heads=16,
                 ffn_dim=3072, dilated_ratio=(1, 2, 4, 8, 16), segment_length=None, max_wsi_size=262144,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6), global_pool=False, dropout=0.25, drop_path_rate=0.1):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        self.tile_size = tile_size
        self.slide_ngrids = slide_ngrids
        num_patches = slide_ngrids**2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer('pos_embed', torch.zeros(1, num_patches + 1, embed_dim), persistent=False)
        if segment_length is None:
            segment_length = self.get_optimal_segment_length(max_wsi_size, tile_size)
        self.encoder = make_longnet(depth, embed_dim, ffn_dim, heads, dilated_ratio, segment_length,
                                    drop_path_rate=drop_path_rate, dropout=dropout)
        self.norm = norm_layer(embed_dim)
        self.global_pool = global_pool
        pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.slide_ngrids, cls_token=True)
        self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))

    def get_optimal_segment_length(self, max_wsi_size: int = 262144, tile_size: int = 256):
        max_seq_len = (max_wsi_size // tile_size) ** 2
        segment_length = np.linspace(np.log2(1024), int(np.log2(max_seq_len)), 5)
        segment_length = np.power(2, segment_length).astype(int)
        return [int(s) for s in segment_length]  # upstream: str(list(...)), eval()'d by EncoderConfig

    def coords_to_pos(self, coords, tile_size: int = 256):
        coords_ = torch.floor(coords / tile_size)
        pos = coords_[..., 0] * self.slide_ngrids + coords_[..., 1]
        return pos.long() + 1  # add 1 for the cls token

    def forward(self, x, coords, all_layer_embed=False):
        x = self.patch_embed(x)
        pos = self.coords_to_pos(coords, self.tile_size)  # [N, L]
        x = x + self.pos_embed[:, pos, :].squeeze(0)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        cls_tokens = cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls_tokens, x), dim=1)
        if all_layer_embed:
            x_list = self.encoder(src_tokens=None, token_embeddings=x, return_all_hiddens=all_layer_embed)[
                "encoder_states"]
        else:
            x_list = [self.encoder(src_tokens=None, token_embeddings=x)["encoder_out"]]
        outcomes = []
        for x in x_list:
            if self.global_pool:
                x = x[:, 1:, :].mean(dim=1)  # global average pooling
                outcome = self.norm(x)
            else:
                x = self.norm(x)
                outcome = x[:, 0]
            outcomes.append(outcome)
        return outcomes
