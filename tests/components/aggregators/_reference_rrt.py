"""Minimal port of RRT-MIL's forward (RRTMIL with R-MSA, CR-MSA and the DAttention pooling), for parity tests only.

Ported from DearCaat/RRT-MIL: ``modules/rmsa.py`` at commit 7aca24f (region_partition, region_reverse,
InnerAttention, RegionAttntion, CrossRegionAttntion), ``modules/rrt.py`` at commit 1ccae3e
(initialize_weights, Mlp, TransLayer, RRTEncoder, RRTMIL) and ``modules/datten.py`` (Attention,
AttentionGated, DAttention). Changes from upstream, none affecting the numbers of the configurations
tested: the ablation-only branches that need other files are left out (``attn='ntrans'`` and
``region_attn='ntrans'`` (Nystrom), ``pos`` = PPEG/PEG/SINCOS, DAttention's random masking, the
``epeg_type='value_*'`` variants); timm's DropPath is nn.Identity (drop_path = 0, the default);
``return_attn`` of the CR-MSA inner attention and the unused ``flops``/``extra_repr`` are dropped.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- modules/rmsa.py
def region_partition(x, region_size):
    B, H, W, C = x.shape
    x = x.view(B, H // region_size, region_size, W // region_size, region_size, C)
    regions = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, region_size, region_size, C)
    return regions


def region_reverse(regions, region_size, H, W):
    B = int(regions.shape[0] / (H * W / region_size / region_size))
    x = regions.view(B, H // region_size, W // region_size, region_size, region_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)
    return x


class InnerAttention(nn.Module):
    def __init__(self, dim, head_dim=None, num_heads=8, qkv_bias=True, qk_scale=None, attn_drop=0., proj_drop=0.,
                 epeg=True, epeg_k=15, epeg_2d=False, epeg_bias=True, epeg_type='attn'):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        if head_dim is None:
            head_dim = dim // num_heads
        self.head_dim = head_dim
        self.scale = qk_scale or head_dim ** -0.5

        self.qkv = nn.Linear(dim, head_dim * num_heads * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(head_dim * num_heads, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        self.epeg_2d = epeg_2d
        self.epeg_type = epeg_type
        if epeg:
            padding = epeg_k // 2
            if epeg_2d:
                self.pe = nn.Conv2d(num_heads, num_heads, epeg_k, padding=padding, groups=num_heads, bias=epeg_bias)
            else:
                self.pe = nn.Conv2d(num_heads, num_heads, (epeg_k, 1), padding=(padding, 0), groups=num_heads,
                                    bias=epeg_bias)
        else:
            self.pe = None

        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        B_, N, C = x.shape

        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]

        q = q * self.scale
        attn = (q @ k.transpose(-2, -1))

        if self.pe is not None and self.epeg_type == 'attn':
            pe = self.pe(attn)
            attn = attn + pe

        attn = self.softmax(attn)

        attn = self.attn_drop(attn)

        x = (attn @ v).transpose(1, 2).reshape(B_, N, self.num_heads * self.head_dim)

        x = self.proj(x)
        x = self.proj_drop(x)

        return x


def _padding(self, x):
    """RegionAttntion.padding and CrossRegionAttntion.padding (identical upstream)."""
    B, L, C = x.shape
    if self.region_size is not None:
        H, W = int(np.ceil(np.sqrt(L))), int(np.ceil(np.sqrt(L)))
        _n = -H % self.region_size
        H, W = H + _n, W + _n
        region_num = int(H // self.region_size)
        region_size = self.region_size
    else:
        H, W = int(np.ceil(np.sqrt(L))), int(np.ceil(np.sqrt(L)))
        _n = -H % self.region_num
        H, W = H + _n, W + _n
        region_size = int(H // self.region_num)
        region_num = self.region_num

    add_length = H * W - L

    # if padding much，i will give up region attention. only for ablation
    if (add_length > L / (self.min_region_ratio + 1e-8) or L < self.min_region_num):
        H, W = int(np.ceil(np.sqrt(L))), int(np.ceil(np.sqrt(L)))
        _n = -H % 2
        H, W = H + _n, W + _n
        add_length = H * W - L
        region_size = H
    if add_length > 0:
        x = torch.cat([x, torch.zeros((B, add_length, C), device=x.device)], dim=1)

    return x, H, W, add_length, region_num, region_size


class RegionAttntion(nn.Module):
    def __init__(self, dim, head_dim=None, num_heads=8, region_size=0, qkv_bias=True, qk_scale=None, drop=0.,
                 attn_drop=0., region_num=8, epeg=False, min_region_num=0, min_region_ratio=0., region_attn='native',
                 **kawrgs):
        super().__init__()

        self.dim = dim
        self.num_heads = num_heads
        self.region_size = region_size if region_size > 0 else None
        self.region_num = region_num
        self.min_region_num = min_region_num
        self.min_region_ratio = min_region_ratio

        self.attn = InnerAttention(
            dim, head_dim=head_dim, num_heads=num_heads,
            qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop, epeg=epeg, **kawrgs)

    padding = _padding

    def forward(self, x, return_attn=False):
        B, L, C = x.shape

        # padding
        x, H, W, add_length, region_num, region_size = self.padding(x)

        x = x.view(B, H, W, C)

        # partition regions
        x_regions = region_partition(x, region_size)  # nW*B, region_size, region_size, C

        x_regions = x_regions.view(-1, region_size * region_size, C)  # nW*B, region_size*region_size, C

        # R-MSA
        attn_regions = self.attn(x_regions)  # nW*B, region_size*region_size, C

        # merge regions
        attn_regions = attn_regions.view(-1, region_size, region_size, C)

        x = region_reverse(attn_regions, region_size, H, W)  # B H' W' C

        x = x.view(B, H * W, C)

        if add_length > 0:
            x = x[:, :-add_length]

        return x


class CrossRegionAttntion(nn.Module):
    def __init__(self, dim, head_dim=None, num_heads=8, region_size=0, qkv_bias=True, qk_scale=None, drop=0.,
                 attn_drop=0., region_num=8, epeg=False, min_region_num=0, min_region_ratio=0., crmsa_k=3,
                 crmsa_mlp=False, region_attn='native', **kawrgs):
        super().__init__()

        self.dim = dim
        self.num_heads = num_heads
        self.region_size = region_size if region_size > 0 else None
        self.region_num = region_num
        self.min_region_num = min_region_num
        self.min_region_ratio = min_region_ratio

        self.attn = InnerAttention(
            dim, head_dim=head_dim, num_heads=num_heads,
            qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop, epeg=epeg, **kawrgs)

        self.crmsa_mlp = crmsa_mlp
        if crmsa_mlp:
            self.phi = [nn.Linear(self.dim, self.dim // 4, bias=False)]
            self.phi += [nn.Tanh()]
            self.phi += [nn.Linear(self.dim // 4, crmsa_k, bias=False)]
            self.phi = nn.Sequential(*self.phi)
        else:
            self.phi = nn.Parameter(
                torch.empty(
                    (self.dim, crmsa_k),
                )
            )
            nn.init.kaiming_uniform_(self.phi, a=math.sqrt(5))

    padding = _padding

    def forward(self, x, return_attn=False):
        B, L, C = x.shape

        # padding
        x, H, W, add_length, region_num, region_size = self.padding(x)

        x = x.view(B, H, W, C)

        # partition regions
        x_regions = region_partition(x, region_size)  # nW*B, region_size, region_size, C

        x_regions = x_regions.view(-1, region_size * region_size, C)  # nW*B, region_size*region_size, C

        # CR-MSA
        if self.crmsa_mlp:
            logits = self.phi(x_regions).transpose(1, 2)  # W*B, sW, region_size*region_size
        else:
            logits = torch.einsum("w p c, c n -> w p n", x_regions, self.phi).transpose(1, 2)  # nW*B, sW, rs*rs

        combine_weights = logits.softmax(dim=-1)
        dispatch_weights = logits.softmax(dim=1)

        logits_min, _ = logits.min(dim=-1)
        logits_max, _ = logits.max(dim=-1)
        dispatch_weights_mm = (logits - logits_min.unsqueeze(-1)) / (
            logits_max.unsqueeze(-1) - logits_min.unsqueeze(-1) + 1e-8)

        attn_regions = torch.einsum("w p c, w n p -> w n p c", x_regions, combine_weights).sum(dim=-2).transpose(0, 1)

        attn_regions = self.attn(attn_regions).transpose(0, 1)  # nW, sW, C

        attn_regions = torch.einsum("w n c, w n p -> w n p c", attn_regions, dispatch_weights_mm)
        attn_regions = torch.einsum("w n p c, w n p -> w n p c", attn_regions, dispatch_weights).sum(dim=1)

        # merge regions
        attn_regions = attn_regions.view(-1, region_size, region_size, C)

        x = region_reverse(attn_regions, region_size, H, W)  # B H' W' C

        x = x.view(B, H * W, C)

        if add_length > 0:
            x = x[:, :-add_length]

        return x


# ---------------------------------------------------------------- modules/datten.py
class Attention(nn.Module):
    def __init__(self, input_dim=512, act='relu', bias=False, dropout=False):
        super(Attention, self).__init__()
        self.L = input_dim
        self.D = 128
        self.K = 1

        self.attention = [nn.Linear(self.L, self.D, bias=bias)]

        if act == 'gelu':
            self.attention += [nn.GELU()]
        elif act == 'relu':
            self.attention += [nn.ReLU()]
        elif act == 'tanh':
            self.attention += [nn.Tanh()]

        if dropout:
            self.attention += [nn.Dropout(0.25)]

        self.attention += [nn.Linear(self.D, self.K, bias=bias)]

        self.attention = nn.Sequential(*self.attention)

    def forward(self, x, no_norm=False):
        A = self.attention(x)
        A = torch.transpose(A, -1, -2)  # KxN
        A_ori = A.clone()
        A = F.softmax(A, dim=-1)  # softmax over N
        x = torch.matmul(A, x)

        if no_norm:
            return x, A_ori
        else:
            return x, A


class DAttention(nn.Module):
    def __init__(self, input_dim=512, act='relu', mask_ratio=0., gated=False, bias=False, dropout=False):
        super(DAttention, self).__init__()
        self.gated = gated
        assert not gated  # AttentionGated: not ported (da_gated is not a main.py argument)
        self.attention = Attention(input_dim, act, bias, dropout)
        self.mask_ratio = mask_ratio

    def forward(self, x, mask_ids=None, len_keep=None, return_attn=False, no_norm=False, mask_enable=False, **kwags):
        x, attn = self.attention(x, no_norm)

        if return_attn:
            return x.squeeze(1), attn.squeeze(1)
        else:
            return x.squeeze(1)


# ---------------------------------------------------------------- modules/rrt.py
def initialize_weights(module):
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            # ref from huggingface
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            # ref from clam
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.ReLU, drop=0.):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop(x)
        x = self.fc2(x)
        x = self.drop(x)
        return x


class TransLayer(nn.Module):
    def __init__(self, norm_layer=nn.LayerNorm, dim=512, head=8, drop_out=0.1, drop_path=0., ffn=False, ffn_act='gelu',
                 mlp_ratio=4., trans_dim=64, attn='rmsa', n_region=8, epeg=False, region_size=0, min_region_num=0,
                 min_region_ratio=0, qkv_bias=True, crmsa_k=3, epeg_k=15, **kwargs):
        super().__init__()

        self.norm = norm_layer(dim)
        self.norm2 = norm_layer(dim) if ffn else nn.Identity()
        if attn == 'rmsa':
            self.attn = RegionAttntion(
                dim=dim, num_heads=head, drop=drop_out, region_num=n_region, head_dim=dim // head, epeg=epeg,
                region_size=region_size, min_region_num=min_region_num, min_region_ratio=min_region_ratio,
                qkv_bias=qkv_bias, epeg_k=epeg_k, **kwargs)
        elif attn == 'crmsa':
            self.attn = CrossRegionAttntion(
                dim=dim, num_heads=head, drop=drop_out, region_num=n_region, head_dim=dim // head, epeg=epeg,
                region_size=region_size, min_region_num=min_region_num, min_region_ratio=min_region_ratio,
                qkv_bias=qkv_bias, crmsa_k=crmsa_k, **kwargs)
        else:
            raise NotImplementedError

        assert drop_path == 0.  # timm's DropPath: not ported
        self.drop_path = nn.Identity()
        mlp_hidden_dim = int(dim * mlp_ratio)
        self.ffn = ffn
        act_layer = nn.GELU if ffn_act == 'gelu' else nn.ReLU
        self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer,
                       drop=drop_out) if ffn else nn.Identity()

    def forward(self, x):
        z = self.attn(self.norm(x))
        x = x + self.drop_path(z)
        if self.ffn:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class RRTEncoder(nn.Module):
    def __init__(self, mlp_dim=512, pos_pos=0, pos='none', peg_k=7, attn='rmsa', region_num=8, drop_out=0.1,
                 n_layers=2, n_heads=8, drop_path=0., ffn=False, ffn_act='gelu', mlp_ratio=4., trans_dim=64, epeg=True,
                 epeg_k=15, region_size=0, min_region_num=0, min_region_ratio=0, qkv_bias=True, peg_bias=True,
                 peg_1d=False, cr_msa=True, crmsa_k=3, all_shortcut=False, crmsa_mlp=False, crmsa_heads=8,
                 need_init=False, **kwargs):
        super(RRTEncoder, self).__init__()

        self.final_dim = mlp_dim

        self.norm = nn.LayerNorm(self.final_dim)
        self.all_shortcut = all_shortcut

        self.layers = []
        for i in range(n_layers - 1):
            self.layers += [TransLayer(dim=mlp_dim, head=n_heads, drop_out=drop_out, drop_path=drop_path, ffn=ffn,
                                       ffn_act=ffn_act, mlp_ratio=mlp_ratio, trans_dim=trans_dim, attn=attn,
                                       n_region=region_num, epeg=epeg, region_size=region_size,
                                       min_region_num=min_region_num, min_region_ratio=min_region_ratio,
                                       qkv_bias=qkv_bias, epeg_k=epeg_k, **kwargs)]
        self.layers = nn.Sequential(*self.layers)

        # CR-MSA
        self.cr_msa = TransLayer(dim=mlp_dim, head=crmsa_heads, drop_out=drop_out, drop_path=drop_path, ffn=ffn,
                                 ffn_act=ffn_act, mlp_ratio=mlp_ratio, trans_dim=trans_dim, attn='crmsa',
                                 qkv_bias=qkv_bias, crmsa_k=crmsa_k, crmsa_mlp=crmsa_mlp,
                                 **kwargs) if cr_msa else nn.Identity()

        assert pos == 'none'  # PPEG / PEG / SINCOS: only for ablation upstream, not ported
        self.pos_embedding = nn.Identity()

        self.pos_pos = pos_pos

        if need_init:
            self.apply(initialize_weights)

    def forward(self, x):
        shape_len = 3
        if len(x.shape) == 2:
            x = x.unsqueeze(0)
            shape_len = 2

        batch, num_patches, C = x.shape
        x_shortcut = x

        # PEG/PPEG
        if self.pos_pos == -1:
            x = self.pos_embedding(x)

        # R-MSA within region
        for i, layer in enumerate(self.layers.children()):
            if i == 1 and self.pos_pos == 0:
                x = self.pos_embedding(x)
            x = layer(x)

        x = self.cr_msa(x)

        if self.all_shortcut:
            x = x + x_shortcut

        x = self.norm(x)

        if shape_len == 2:
            x = x.squeeze(0)
        return x


class RRTMIL(nn.Module):
    def __init__(self, input_dim=1024, mlp_dim=512, act='relu', n_classes=2, dropout=0.25, pos_pos=0, pos='none',
                 peg_k=7, attn='rmsa', pool='attn', region_num=8, n_layers=2, n_heads=8, drop_path=0., da_act='relu',
                 trans_dropout=0.1, ffn=False, ffn_act='gelu', mlp_ratio=4., da_gated=False, da_bias=False,
                 da_dropout=False, trans_dim=64, epeg=True, min_region_num=0, qkv_bias=True, **kwargs):
        super(RRTMIL, self).__init__()

        self.patch_to_emb = [nn.Linear(input_dim, 512)]

        if act.lower() == 'relu':
            self.patch_to_emb += [nn.ReLU()]
        elif act.lower() == 'gelu':
            self.patch_to_emb += [nn.GELU()]

        self.dp = nn.Dropout(dropout) if dropout > 0. else nn.Identity()

        self.patch_to_emb = nn.Sequential(*self.patch_to_emb)

        self.online_encoder = RRTEncoder(mlp_dim=mlp_dim, pos_pos=pos_pos, pos=pos, peg_k=peg_k, attn=attn,
                                         region_num=region_num, n_layers=n_layers, n_heads=n_heads,
                                         drop_path=drop_path, drop_out=trans_dropout, ffn=ffn, ffn_act=ffn_act,
                                         mlp_ratio=mlp_ratio, trans_dim=trans_dim, epeg=epeg,
                                         min_region_num=min_region_num, qkv_bias=qkv_bias, **kwargs)

        self.pool_fn = DAttention(self.online_encoder.final_dim, da_act, gated=da_gated, bias=da_bias,
                                  dropout=da_dropout) if pool == 'attn' else nn.AdaptiveAvgPool1d(1)

        self.predictor = nn.Linear(self.online_encoder.final_dim, n_classes)

        self.apply(initialize_weights)

    def forward(self, x, return_attn=False, no_norm=False):
        x = self.patch_to_emb(x)  # n*512
        x = self.dp(x)

        # feature re-embedding
        x = self.online_encoder(x)

        # feature aggregation
        if return_attn:
            x, a = self.pool_fn(x, return_attn=True, no_norm=no_norm)
        else:
            x = self.pool_fn(x)

        # prediction
        logits = self.predictor(x)

        if return_attn:
            return logits, a
        else:
            return logits
