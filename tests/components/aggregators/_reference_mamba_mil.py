"""Port of MambaMIL's forward for parity tests only, with pure-torch stand-ins for the CUDA kernels.

Ported from isyangshu/MambaMIL (MIT License, Copyright (c) Shu Yang): ``models/MambaMIL.py``
(initialize_weights, MambaMIL), ``mamba/mamba_ssm/modules/srmamba.py`` (TransposeTokenReEmbedding,
SRMamba), ``mamba/mamba_ssm/modules/bimamba.py`` (BiMamba) and the forward of ``MambaInnerFnNoOutProj``
in ``mamba/mamba_ssm/ops/selective_scan_interface.py``; ``selective_scan_ref`` and
``mamba_inner_ref`` from the same file, and ``Mamba`` from state-spaces/mamba
``mamba_ssm/modules/mamba_simple.py`` (Apache-2.0, Copyright (c) 2023 Tri Dao, Albert Gu; the copy
bundled in MambaMIL is stored there only as a .pyc), ``causal_conv1d_ref`` from Dao-AILab/causal-conv1d
``causal_conv1d/causal_conv1d_interface.py`` (BSD-3-Clause, Copyright (c) 2024 Tri Dao).

Changes from upstream, none affecting the numbers: the fused CUDA functions ``causal_conv1d_fwd`` and
``selective_scan_cuda.fwd`` are replaced by ``causal_conv1d_ref`` and ``selective_scan_ref``; only the
fast path (``use_fast_path=True``, what runs on the authors' GPUs) is kept; the three mixers' identical
``__init__`` bodies (parameter names kept) are one class, ``_MambaParams``; the slow paths, inference
cache, ``step`` and ``relocate`` are left out; MambaMIL's hard-coded width 512 and d_state 16 are
arguments (default 512 and 16) so tests can be small; the init kwargs of the three mixers are fixed
at their defaults; MambaMIL returns (logits, pooled h, A) instead of (logits, Y_prob, Y_hat, None, None).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat


def causal_conv1d_ref(x, weight, bias=None, activation=None):
    dtype_in = x.dtype
    x = x.to(weight.dtype)
    seqlen = x.shape[-1]
    dim, width = weight.shape
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=dim)
    out = out[..., :seqlen]
    return (out if activation is None else F.silu(out)).to(dtype=dtype_in)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    is_variable_B = B.dim() >= 3
    is_variable_C = C.dim() >= 3
    B = B.float()
    C = C.float()
    x = A.new_zeros((batch, dim, dstate))
    ys = []
    deltaA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    if not is_variable_B:
        deltaB_u = torch.einsum('bdl,dn,bdl->bdln', delta, B, u)
    else:
        if B.dim() == 3:
            deltaB_u = torch.einsum('bdl,bnl,bdl->bdln', delta, B, u)
        else:
            B = repeat(B, "B G N L -> B (G H) N L", H=dim // B.shape[1])
            deltaB_u = torch.einsum('bdl,bdnl,bdl->bdln', delta, B, u)
    if is_variable_C and C.dim() == 4:
        C = repeat(C, "B G N L -> B (G H) N L", H=dim // C.shape[1])
    last_state = None
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        if not is_variable_C:
            y = torch.einsum('bdn,dn->bd', x, C)
        else:
            if C.dim() == 3:
                y = torch.einsum('bdn,bn->bd', x, C[:, :, i])
            else:
                y = torch.einsum('bdn,bdn->bd', x, C[:, :, :, i])
        if i == u.shape[2] - 1:
            last_state = x
        ys.append(y)
    y = torch.stack(ys, dim=2)  # (batch dim L)
    out = y if D is None else y + u * rearrange(D, "d -> d 1")
    if z is not None:
        out = out * F.silu(z)
    out = out.to(dtype=dtype_in)
    return out if not return_last_state else (out, last_state)


def mamba_inner_fn_no_out_proj(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                               A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                               C_proj_bias=None, delta_softplus=True):
    """MambaInnerFnNoOutProj.forward with the two CUDA calls replaced by their references; returns out_z."""
    L = xz.shape[-1]
    delta_rank = delta_proj_weight.shape[1]
    d_state = A.shape[-1] * (1 if not A.is_complex() else 2)
    conv1d_weight = rearrange(conv1d_weight, "d 1 w -> d w")
    x, z = xz.chunk(2, dim=1)
    conv1d_out = causal_conv1d_ref(x, conv1d_weight, conv1d_bias, "silu")
    x_dbl = F.linear(rearrange(conv1d_out, 'b d l -> (b l) d'), x_proj_weight)  # (bl d)
    delta = rearrange(delta_proj_weight @ x_dbl[:, :delta_rank].t(), "d (b l) -> b d l", l=L)
    if B is None:  # variable B
        B = x_dbl[:, delta_rank:delta_rank + d_state]  # (bl dstate)
        if B_proj_bias is not None:
            B = B + B_proj_bias.to(dtype=B.dtype)
        B = rearrange(B, "(b l) dstate -> b 1 dstate l", l=L).contiguous()
    if C is None:  # variable C
        C = x_dbl[:, -d_state:]  # (bl dstate)
        if C_proj_bias is not None:
            C = C + C_proj_bias.to(dtype=C.dtype)
        C = rearrange(C, "(b l) dstate -> b 1 dstate l", l=L).contiguous()
    return selective_scan_ref(conv1d_out, delta, A, B, C, D, z, delta_bias, delta_softplus)


def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                   out_proj_weight, out_proj_bias, A, B=None, C=None, D=None, delta_bias=None,
                   B_proj_bias=None, C_proj_bias=None, delta_softplus=True):
    out_z = mamba_inner_fn_no_out_proj(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                                       A, B, C, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus)
    return F.linear(rearrange(out_z, "b d l -> b l d"), out_proj_weight, out_proj_bias)


class TransposeTokenReEmbedding:
    @staticmethod
    def transpose_normal_padding(x, rate):
        x = rearrange(x, "b c l -> b l c")
        B, N, C = x.shape
        value = N // rate
        if N % rate != 0:
            padding_length = (value + 1) * rate - N
            padded_x = torch.nn.functional.pad(x, (0, 0, 0, padding_length))
        else:
            padded_x = x
        x_ = rearrange(padded_x, "b (k w) d -> b (w k) d", w=rate)
        x_ = rearrange(x_, "b l c -> b c l")
        return x_

    @staticmethod
    def transpose_remove_padding(x, rate, length):
        x = rearrange(x, "b c l -> b l c")
        x = rearrange(x, "b (w k) d -> b (k w) d", w=rate)
        x = x[:, :length, :]
        x = rearrange(x, "b l c -> b c l")
        return x


class _MambaParams(nn.Module):
    """The parameters Mamba (and, with two=True, BiMamba and SRMamba) create, with their initialisation."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1,
                 dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False, two=False):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(self.expand * self.d_model)
        self.dt_rank = math.ceil(self.d_model / 16) if dt_rank == "auto" else dt_rank
        self.in_proj = nn.Linear(self.d_model, self.d_inner * 2, bias=bias)
        for sfx in ("", "_b") if two else ("",):
            setattr(self, "conv1d" + sfx, nn.Conv1d(self.d_inner, self.d_inner, bias=conv_bias, kernel_size=d_conv,
                                                    groups=self.d_inner, padding=d_conv - 1))
            setattr(self, "x_proj" + sfx, nn.Linear(self.d_inner, self.dt_rank + self.d_state * 2, bias=False))
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            dt_init_std = self.dt_rank ** -0.5 * dt_scale
            nn.init.uniform_(dt_proj.weight, -dt_init_std, dt_init_std)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp(min=dt_init_floor)
            inv_dt = dt + torch.log(-torch.expm1(-dt))
            with torch.no_grad():
                dt_proj.bias.copy_(inv_dt)
            setattr(self, "dt_proj" + sfx, dt_proj)
            A = repeat(torch.arange(1, self.d_state + 1, dtype=torch.float32), "n -> d n", d=self.d_inner).contiguous()
            name = "A_log" if not sfx else "A_b_log"
            setattr(self, name, nn.Parameter(torch.log(A)))
            setattr(self, "D" + sfx, nn.Parameter(torch.ones(self.d_inner)))
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=bias)

    def _xz(self, hidden_states):
        batch, seqlen, dim = hidden_states.shape
        xz = rearrange(self.in_proj.weight @ rearrange(hidden_states, "b l d -> d (b l)"),
                       "d (b l) -> b d l", l=seqlen)
        if self.in_proj.bias is not None:
            xz = xz + rearrange(self.in_proj.bias.to(dtype=xz.dtype), "d -> d 1")
        return xz

    def _inner(self, xz, sfx):
        A = -torch.exp(getattr(self, "A_log" if not sfx else "A_b_log").float())
        return mamba_inner_fn_no_out_proj(xz, getattr(self, "conv1d" + sfx).weight, getattr(self, "conv1d" + sfx).bias,
                                          getattr(self, "x_proj" + sfx).weight, getattr(self, "dt_proj" + sfx).weight,
                                          A, None, None, getattr(self, "D" + sfx).float(),
                                          delta_bias=getattr(self, "dt_proj" + sfx).bias.float(), delta_softplus=True)


class Mamba(_MambaParams):
    def forward(self, hidden_states):
        xz = self._xz(hidden_states)
        A = -torch.exp(self.A_log.float())
        return mamba_inner_fn(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                              self.out_proj.weight, self.out_proj.bias, A, None, None, self.D.float(),
                              delta_bias=self.dt_proj.bias.float(), delta_softplus=True)


class BiMamba(_MambaParams):
    def __init__(self, d_model, **kw):
        super().__init__(d_model, two=True, **kw)

    def forward(self, hidden_states, rate=10):
        xz = self._xz(hidden_states)
        out = self._inner(xz, "")
        xz_b = xz.flip([-1])
        out_b = self._inner(xz_b, "_b")
        out_b = out_b.flip([-1])
        return F.linear(rearrange(out + out_b, "b d l -> b l d"), self.out_proj.weight, self.out_proj.bias)


class SRMamba(_MambaParams):
    def __init__(self, d_model, **kw):
        super().__init__(d_model, two=True, **kw)

    def forward(self, hidden_states, rate=10):
        xz = self._xz(hidden_states)
        out = self._inner(xz, "")
        N, C, L = xz.shape
        xz_b = TransposeTokenReEmbedding.transpose_normal_padding(xz, rate=rate)
        out_b = self._inner(xz_b, "_b")
        out_b = TransposeTokenReEmbedding.transpose_remove_padding(out_b, rate=rate, length=L)
        return F.linear(rearrange(out + out_b, "b d l -> b l d"), self.out_proj.weight, self.out_proj.bias)


def initialize_weights(module):
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                m.bias.data.zero_()
        if isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)


class MambaMIL(nn.Module):
    def __init__(self, in_dim, n_classes, dropout, act, survival=False, layer=2, rate=10, type="SRMamba",
                 d_model=512, d_state=16):
        super(MambaMIL, self).__init__()
        self._fc1 = [nn.Linear(in_dim, d_model)]
        if act.lower() == 'relu':
            self._fc1 += [nn.ReLU()]
        elif act.lower() == 'gelu':
            self._fc1 += [nn.GELU()]
        if dropout:
            self._fc1 += [nn.Dropout(dropout)]
        self._fc1 = nn.Sequential(*self._fc1)
        self.norm = nn.LayerNorm(d_model)
        self.layers = nn.ModuleList()
        self.survival = survival
        mixer = {"SRMamba": SRMamba, "Mamba": Mamba, "BiMamba": BiMamba}[type]
        for _ in range(layer):
            self.layers.append(nn.Sequential(nn.LayerNorm(d_model),
                                             mixer(d_model=d_model, d_state=d_state, d_conv=4, expand=2)))
        self.n_classes = n_classes
        self.classifier = nn.Linear(d_model, self.n_classes)
        self.attention = nn.Sequential(nn.Linear(d_model, 128), nn.Tanh(), nn.Linear(128, 1))
        self.rate = rate
        self.type = type
        self.apply(initialize_weights)

    def forward(self, x):
        if len(x.shape) == 2:
            x = x.expand(1, -1, -1)
        h = x.float()  # [B, n, 1024]
        h = self._fc1(h)  # [B, n, 256]
        if self.type == "SRMamba":
            for layer in self.layers:
                h_ = h
                h = layer[0](h)
                h = layer[1](h, rate=self.rate)
                h = h + h_
        elif self.type == "Mamba" or self.type == "BiMamba":
            for layer in self.layers:
                h_ = h
                h = layer[0](h)
                h = layer[1](h)
                h = h + h_
        h = self.norm(h)
        A = self.attention(h)  # [B, n, K]
        A = torch.transpose(A, 1, 2)
        A = F.softmax(A, dim=-1)  # [B, K, n]
        h = torch.bmm(A, h)  # [B, K, 512]
        h = h.squeeze(0)
        logits = self.classifier(h)  # [B, n_classes]
        return logits, h, A
