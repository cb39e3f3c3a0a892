"""Minimal port of TITAN's vision encoder forward, for parity tests only.

Ported from the remote code of huggingface.co/MahmoodLab/TITAN (CC-BY-NC-ND 4.0, Mahmood Lab), file
``vision_transformer.py``: ``preprocess_features``, ``Attention``, ``Block``, ``CustomSequential``,
``AttentionalPooler`` and ``VisionTransformer`` (``forward``, ``forward_features``, ``_pos_embed``,
``interpolate_pos_encoding``, ``forward_attn_pool``, ``get_alibi``), with ``TitanConfig``'s
``attentional_pool = "parallel"``.

Changes from upstream, none affecting the numbers of the batch-of-one path ported here: timm's ``Mlp`` is
inlined (fc1, GELU, fc2; its dropouts are 0 and its norm is Identity); timm's init is left out (the tests copy
weights in); the ``pos_encode`` branches other than ``"alibi"``, the batched-crop caches (``local_alibi``,
``global_alibi``, ``prepare_tensor``), masked image modelling, gradient checkpointing and the classifier head
are left out.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def preprocess_features(features, coords, patch_size_lv0):
    features = features.squeeze(0) if features.dim() == 3 else features
    coords = coords.squeeze(0) if coords.dim() == 3 else coords
    offset = coords.min(dim=0).values
    grid_coords = torch.floor_divide(coords - offset, patch_size_lv0)
    grid_offset = grid_coords.min(dim=0).values
    grid_coords = grid_coords - grid_offset
    _H, _W = grid_coords.max(dim=0).values + 1
    feature_grid = torch.zeros((_H, _W, features.size(-1)), device=features.device)
    coords_grid = torch.zeros((_H, _W, 2), dtype=torch.int64, device=coords.device)
    indices = grid_coords[:, 0] * _W + grid_coords[:, 1]
    feature_grid.view(-1, features.size(-1)).index_add_(0, indices, features)
    coords_grid.view(-1, 2).index_add_(0, indices, coords)
    feature_grid = feature_grid.permute(2, 0, 1)
    coords_grid = coords_grid.permute(2, 0, 1)
    bg_mask = torch.any(feature_grid != 0, dim=0)
    return feature_grid.unsqueeze(0), coords_grid.unsqueeze(0), bg_mask.unsqueeze(0)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.attn_drop_prob = 0.0

    def forward(self, x, attn_bias, bg_mask=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=self.attn_drop_prob)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, x, attn_bias, bg_mask=None):
        x = x + self.attn(self.norm1(x), attn_bias=attn_bias, bg_mask=bg_mask)
        x = x + self.mlp(self.norm2(x))
        return x


class CustomSequential(nn.Module):
    def __init__(self, *modules):
        super(CustomSequential, self).__init__()
        self.modules_list = nn.ModuleList(modules)

    def forward(self, x, attn_mask, bg_mask=None):
        for i, module in enumerate(self.modules_list):
            x = module(x, attn_mask, bg_mask)
        return x


class AttentionalPooler(nn.Module):
    def __init__(self, d_model, context_dim, n_head=8, n_queries=256, norm_layer=nn.LayerNorm):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim)
        self.ln_q = norm_layer(d_model)
        self.ln_k = norm_layer(context_dim)
        self.n_head = n_head

    def forward(self, x, bg_mask=None):
        x = self.ln_k(x).permute(1, 0, 2).contiguous()  # NLD -> LND
        N = x.shape[1]
        q = self.ln_q(self.query)
        out, _ = self.attn(q.unsqueeze(1).expand(-1, N, -1), x, x, need_weights=False)
        return out.permute(1, 0, 2).contiguous()  # LND -> NLD


class VisionTransformer(nn.Module):
    def __init__(self, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True,
                 mlp_patch_embed_dim=768, attn_pooler_queries=128, attn_pooler_heads=8):
        super().__init__()
        from functools import partial
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.num_heads = num_heads
        self.num_prefix_tokens = 1
        self.patch_embed = nn.Sequential(nn.Linear(mlp_patch_embed_dim, embed_dim), nn.GELU())
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_encode_type = "alibi"
        self.pos_drop = nn.Dropout(p=0.0)
        self.norm_pre = nn.Identity()
        self.blocks = CustomSequential(*[
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, norm_layer=norm_layer)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.attn_pool_type = "parallel"
        self.attn_pool = AttentionalPooler(embed_dim, embed_dim, n_head=attn_pooler_heads,
                                           n_queries=attn_pooler_queries)
        self.attn_pool_contrastive = AttentionalPooler(embed_dim, embed_dim, n_head=attn_pooler_heads, n_queries=1)
        scale = embed_dim**-0.5
        self.proj = nn.Parameter(scale * torch.randn(embed_dim, embed_dim))

    def _pos_embed(self, x, coords, w, h):
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + torch.zeros_like(x)  # interpolate_pos_encoding for "alibi"
        return self.pos_drop(x)

    def forward_features(self, x, coords=None, mask=None, bg_mask=None):
        B, nc, w, h = x.shape
        x = x.flatten(2, 3).transpose(1, 2)
        attn_bias = self.get_alibi(w, h, bg_mask) if B == 1 else self.get_alibi(w, h)
        attn_bias = attn_bias.repeat(x.shape[0], 1, 1, 1).type(x.dtype).to(x.device)
        x = self.patch_embed(x)
        x = self._pos_embed(x, coords, w, h)
        x = self.norm_pre(x)
        if bg_mask is not None and B == 1:
            bg_mask = torch.cat((torch.ones((1, 1), dtype=torch.bool, device=x.device), bg_mask.view(1, -1)), dim=1)
            x = x[bg_mask].unsqueeze(0)
        x = self.blocks(x, attn_bias, bg_mask)
        x = self.norm(x)
        return x

    def forward_attn_pool(self, x, bg_mask=None):
        tokens = self.attn_pool(x, bg_mask=bg_mask)
        pooled = self.attn_pool_contrastive(x, bg_mask=bg_mask)
        pooled = pooled.squeeze(1)
        return pooled, tokens

    def forward(self, patch_features, patch_coords, patch_size_lv0, no_proj=False):
        x, coords, bg_mask = preprocess_features(patch_features, patch_coords, patch_size_lv0)
        x = self.forward_features(x, coords=coords, bg_mask=bg_mask)
        pooled, tokens = self.forward_attn_pool(x, bg_mask=bg_mask)
        if no_proj:
            return pooled, tokens  # upstream returns pooled only; the tokens are returned for the tests
        return pooled @ self.proj, tokens

    def get_alibi(self, w, h, bg_mask=None):
        x, y = np.meshgrid(np.arange(w), np.arange(h), indexing="ij")
        if bg_mask is not None:
            x = x[bg_mask.cpu().squeeze(0)]
            y = y[bg_mask.cpu().squeeze(0)]
        points = np.stack([x.ravel(), y.ravel()], axis=1)  # (w*h, 2)
        diffs = points[:, None, :] - points[None, :, :]
        dists = np.sqrt(np.sum(diffs**2, axis=-1))  # (w*h, w*h)

        def get_slopes(n):
            if math.log2(n).is_integer():
                p = 2 ** (-(2 ** -(math.log2(n) - 3)))
                return [p * (p**i) for i in range(n)]
            nearest_power_of_2 = 2 ** math.floor(math.log2(n))
            base_slopes = get_slopes(nearest_power_of_2)
            if nearest_power_of_2 == n:
                return base_slopes
            extra_slopes = get_slopes(2 * nearest_power_of_2)[0::2][: n - nearest_power_of_2]
            return base_slopes + extra_slopes

        slopes = torch.tensor(get_slopes(self.num_heads), dtype=torch.float32).view(self.num_heads, 1, 1)
        n_patches = dists.shape[-1]
        dists_tensor = torch.tensor(dists, dtype=torch.float32).view(1, n_patches, n_patches)
        bias_matrix = dists_tensor * slopes * -1
        embed_len = n_patches + 1
        all_bias = torch.zeros(1, self.num_heads, embed_len, embed_len)
        all_bias[:, :, 1:, 1:] = bias_matrix
        return all_bias
