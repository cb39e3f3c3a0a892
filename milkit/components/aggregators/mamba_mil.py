"""MambaMIL: state-space MIL with sequence reordering (Yang, Wang & Chen, MICCAI 2024, arXiv:2403.06800).

Reference code: isyangshu/MambaMIL, ``models/MambaMIL.py`` (MambaMIL) and its bundled
``mamba/mamba_ssm/modules/srmamba.py`` (SRMamba, TransposeTokenReEmbedding), ``bimamba.py`` and
``mamba_simple.py`` (Mamba), run on the CUDA fast path (``mamba_inner_fn_no_out_proj``); here the
Mamba block is milkit.nn.mamba's plain-torch port. Differences: docs/aggregators.md.
"""

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.nn.mamba import Mamba
from milkit.nn.masking import masked_softmax


class MambaMILConfig(ComponentConfig):
    layer_type: Literal["SRMamba", "Mamba", "BiMamba"] = Field(
        "SRMamba", description="Mamba variant of every layer (the reference's type / --mambamil_type): SRMamba adds "
        "a scan over the bag read with stride rate, BiMamba one over the reversed bag, Mamba scans forward only.")
    num_layers: int = Field(2, ge=1, description="Residual Mamba layers (the reference's layer, default 2).")
    rate: int = Field(10, ge=1, description="SRMamba: stride of the reordered scan (the reference's rate: "
                      "main.py, utils/options.py and mambamil.sh use 10; the README's 'current version' says 20).")
    embed_dim: int = Field(512, gt=0, description="Width after the input fc = Mamba's d_model (the reference: 512).")
    d_state: int = Field(16, gt=0, description="State size per channel of the selective scan (the reference: 16).")
    d_conv: int = Field(4, gt=0, description="Kernel of the causal depthwise convolution (the reference: 4).")
    expand: int = Field(2, gt=0, description="Mamba's inner width = expand * embed_dim (the reference: 2).")
    attn_dim: int = Field(128, gt=0, description="Hidden width of the attention pooling MLP (the reference: 128).")
    act: Literal["gelu", "relu"] = Field("gelu", description="Activation after the input fc (the reference's "
                                         "training scripts pass act='gelu').")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout after the input fc (--drop_out, 0.25).")


class MambaMIL(Aggregator):
    """MambaMIL (Yang et al., 2024): fc -> num_layers x (h + Mamba(LayerNorm(h))) -> LayerNorm -> attention pooling.

    Each patch is a step of the scans, in the bag's stored order (real patches first; padding is moved
    behind them). SRMamba's second scan reads the bag as a (ceil(n / rate), rate) grid column by column
    (patches 0, rate, 2 rate, ..., 1, rate + 1, ...), the grid's tail filled with zero tokens, and puts its
    outputs back in patch order; the grid is built from each bag's own length n, as the reference does for
    its batches of one bag. ``attention`` [B, N]: the pooling softmax, 0 at padding.
    CPU cost: linear in N, but each scan is a sequential loop over the N patches (two scans per
    SRMamba/BiMamba layer, one per Mamba layer), each step touching expand * embed_dim * d_state state
    values. Measured, 1 thread, defaults, in_dim 1024 (CPU time of one eval forward): about 0.5 s at
    N = 1000 and 7 s at N = 10000 (Mamba: 0.25 s and 3.6 s); training forward + backward, N = 1000: 3 s.
    """

    name = "mamba_mil"
    Config = MambaMILConfig
    returns_attention = True
    permutation_invariant = False  # the scans follow the order of the patches

    def __init__(self, config: MambaMILConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        e = self.out_dim = config.embed_dim
        act = nn.GELU() if config.act == "gelu" else nn.ReLU()
        self.fc1 = nn.Sequential(nn.Linear(in_dim, e), act, nn.Dropout(config.dropout))
        self.layers = nn.ModuleList(
            nn.ModuleList([nn.LayerNorm(e), Mamba(e, config.d_state, config.d_conv, config.expand,
                                                  reordered=config.layer_type != "Mamba")])
            for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(e)
        self.attention = nn.Sequential(nn.Linear(e, config.attn_dim), nn.Tanh(), nn.Linear(config.attn_dim, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialize_weights, applied after Mamba's own: every Linear (Mamba's in_proj,
        x_proj, dt_proj, out_proj included, so dt_proj's bias becomes 0) xavier-normal with zero bias."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        keep = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # b n: real patches first, in order
        feats, real = feats.gather(1, keep[..., None].expand_as(feats)), mask.gather(1, keep)
        order, inverse = self.reorder(real.sum(1), feats.shape[1])
        h = self.fc1(feats).masked_fill(~real[..., None], 0.0)           # b n e
        for norm, mixer in self.layers:
            h = h + mixer(norm(h), order, inverse)                       # b n e
        h = self.norm(h)
        weights = masked_softmax(self.attention(h).squeeze(-1), real)    # b n
        embedding = torch.einsum("bn,bne->be", weights, h)               # b e
        return AggregatorOutput(embedding=embedding, attention=torch.zeros_like(weights).scatter(1, keep, weights))

    def reorder(self, lengths: Tensor, width: int) -> tuple[Tensor | None, Tensor | None]:
        """Bag lengths [b] -> (order [b, l']: the patch read at each step of the second scan, -1 for a zero
        token; inverse [b, width]: the step that read each patch), from each bag's real length n."""
        kind, r = self.config.layer_type, self.config.rate
        if kind == "Mamba":
            return None, None
        n, p = lengths[:, None], torch.arange(width, device=lengths.device)[None]  # b 1, 1 w
        if kind == "BiMamba":                                            # the reversed bag
            return torch.where(p < n, n - 1 - p, -1), (n - 1 - p).clamp_min(0)
        k = (n + r - 1) // r                                             # b 1: rows of the (k, rate) grid
        steps = max(int((k * r).max()) if len(n) else 0, min(width, 1))  # l' (>= 1 if there are patches)
        j, rows = torch.arange(steps, device=n.device)[None], k.clamp_min(1)  # 1 l', b 1
        src = (j % rows) * r + j // rows                                 # b l': the grid read column-major
        order = torch.where((j < k * r) & (src < n), src, -1)            # -1: the grid's zero tail, padding
        inverse = torch.where(p < n, (p % r) * k + p // r, 0)            # b w
        return order, inverse
