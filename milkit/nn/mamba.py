"""Mamba selective state-space block (Gu & Dao, 2023, arXiv:2312.00752) in plain torch, no CUDA kernels.

Ported from state-spaces/mamba (Apache-2.0) as bundled in isyangshu/MambaMIL (``mamba/mamba_ssm``):
``modules/mamba_simple.py`` (Mamba), ``modules/bimamba.py`` / ``modules/srmamba.py`` (a second scan
with its own conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b over a reordered copy of in_proj's output,
summed before out_proj) and the fused fast path ``mamba_inner_fn(_no_out_proj)`` of
``ops/selective_scan_interface.py``, whose scan is ``selective_scan_ref`` run chunk by chunk.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

CHUNK = 64
"""Steps per checkpointed piece of the scan: in training only the chunk inputs and states are kept."""


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor) -> Tensor:
    """``selective_scan_ref`` (delta already softplus'd, float32 throughout) with a sequential loop over l:

    h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,  y_t = (C_t h_t + D u_t) * silu(z_t).
    u, delta, z [b, l, d]; A [d, n]; B, C [b, l, n]; D [d] -> y [b, l, d] in u's dtype.
    """
    dtype = u.dtype
    with torch.autocast(u.device.type, enabled=False):
        u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
        h, ys = u.new_zeros(u.shape[0], u.shape[2], A.shape[1]), []     # b d n
        for s in range(0, u.shape[1], CHUNK):
            piece = (h, u[:, s:s + CHUNK], delta[:, s:s + CHUNK], A, B[:, s:s + CHUNK], C[:, s:s + CHUNK])
            y, h = checkpoint(_scan, *piece, use_reentrant=False) if torch.is_grad_enabled() else _scan(*piece)
            ys.append(y)
        y = torch.cat(ys, dim=1) if ys else u.clone()                   # b l d
        return ((y + u * D) * F.silu(z.float())).to(dtype)


def _scan(h: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """One chunk of t steps: state h [b, d, n] -> (C_t h_t [b, t, d], last state [b, d, n])."""
    decay = torch.exp(delta[..., None] * A)                             # b t d n
    drive = (delta * u)[..., None] * B[:, :, None]                      # b t d n
    states = []
    for decay_t, drive_t in zip(decay.unbind(1), drive.unbind(1)):  # unbind: one backward, not one per step
        h = torch.addcmul(drive_t, decay_t, h)
        states.append(h)
    return torch.einsum("btdn,btn->btd", torch.stack(states, dim=1), C), h


class SelectiveScan(nn.Module):
    """One scan path of a Mamba block: causal depthwise conv1d -> SiLU -> x_proj (dt, B, C) ->
    dt_proj + softplus -> selective scan with the skip D, gated by SiLU(z). Mamba's initialisation."""

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        self.d_state, self.dt_rank = d_state, dt_rank
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        nn.init.uniform_(self.dt_proj.weight, -dt_rank ** -0.5, dt_rank ** -0.5)         # dt_init = "random"
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) = dt
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))                      # S4D-real A = -[1..n], skip D = 1

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """x, z [b, l, d_inner] (the two halves of in_proj) -> gated scan output [b, l, d_inner]."""
        length = x.shape[1]
        if length == 0:                                                 # conv1d refuses empty sequences
            return x
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length]).transpose(1, 2)  # b l d: causal conv
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())  # b l d
        return selective_scan(x, delta, -torch.exp(self.A_log.float()), B, C, self.D.float(), z)


class Mamba(nn.Module):
    """in_proj -> (x, z) -> selective scan -> out_proj; with ``reordered``, a second scan with its own
    parameters reads in_proj's output in another order (``order``) and its output, put back in place
    (``inverse``), is added before out_proj: BiMamba (reversed) or SRMamba (sequence reordering)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 reordered: bool = False) -> None:
        super().__init__()
        d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.scan = SelectiveScan(d_inner, d_state, d_conv, dt_rank)
        self.scan_b = SelectiveScan(d_inner, d_state, d_conv, dt_rank) if reordered else None
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: Tensor, order: Tensor | None = None, inverse: Tensor | None = None) -> Tensor:
        """x [b, l, d_model] -> [b, l, d_model]. ``order`` [b, l']: the position of x read at each step
        of the second scan (-1: a zero token); ``inverse`` [b, l]: the step at which each position was read."""
        xz = self.in_proj(x)                                            # b l 2d
        y = self.scan(*xz.chunk(2, dim=-1))                             # b l d
        if self.scan_b is not None:
            if order is None or inverse is None:
                raise ValueError("a reordered Mamba block needs order and inverse")
            y_b = self.scan_b(*take(xz, order).chunk(2, dim=-1))        # b l' d
            y = y + take(y_b, inverse)                                  # b l d
        return self.out_proj(y)


def take(x: Tensor, index: Tensor) -> Tensor:
    """x [b, l, c] read at index [b, m] -> [b, m, c]; rows where index is -1 are zeros."""
    picked = x.gather(1, index.clamp_min(0)[..., None].expand(-1, -1, x.shape[-1]))
    return torch.where(index[..., None] >= 0, picked, torch.zeros((), dtype=x.dtype, device=x.device))
