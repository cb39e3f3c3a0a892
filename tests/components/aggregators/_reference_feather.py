"""Minimal port of MIL-Lab's ABMIL (FEATHER's architecture), for parity and key-layout tests only.

Ported from mahmoodlab/MIL-Lab (CC-BY-NC-ND 4.0; Shao et al., ICML 2025): ``src/models/abmil.py`` @ 5f6f357
(ABMIL: forward_attention, forward_features; ABMILModel wraps it as ``self.model``) and ``src/models/layers.py``
(create_mlp, GlobalGatedAttention), with ``src/model_configs/abmil/base.yaml`` (gate, 512, 384, 1 fc layer, 0.25).

Changes from upstream, none affecting the numbers: no ``MIL`` base class / ``PretrainedConfig``/``PreTrainedModel``
(``ABMILModel`` is an ``nn.Module`` holding ``model``, so ``state_dict()`` has the HF file's ``model.*`` keys),
``initialize_weights`` is torch's default init, ``forward``/``compute_loss`` are dropped.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def create_mlp(in_dim=768, hid_dims=[512, 512], out_dim=512, act=nn.ReLU(), dropout=0., end_with_fc=True,
               end_with_dropout=False, bias=True):
    layers = []
    if len(hid_dims) > 0:
        for hid_dim in hid_dims:
            layers.append(nn.Linear(in_dim, hid_dim, bias=bias))
            layers.append(act)
            layers.append(nn.Dropout(dropout))
            in_dim = hid_dim
    layers.append(nn.Linear(in_dim, out_dim))
    if not end_with_fc:
        layers.append(act)
    if end_with_dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class GlobalGatedAttention(nn.Module):
    def __init__(self, L=1024, D=256, dropout=0., num_classes=1):
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(L, D), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(L, D), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(D, num_classes)

    def forward(self, x):
        a = self.attention_a(x)
        b = self.attention_b(x)
        A = a.mul(b)
        A = self.attention_c(A)  # N x num_classes
        return A


class ABMIL(nn.Module):
    def __init__(self, in_dim=1024, embed_dim=512, num_fc_layers=1, dropout=0.25, attn_dim=384, gate=True,
                 num_classes=2):
        super().__init__()
        self.patch_embed = create_mlp(in_dim=in_dim, hid_dims=[embed_dim] * (num_fc_layers - 1), dropout=dropout,
                                      out_dim=embed_dim, end_with_fc=False)
        assert gate
        self.global_attn = GlobalGatedAttention(L=embed_dim, D=attn_dim, dropout=dropout, num_classes=1)
        if num_classes > 0:
            self.classifier = nn.Linear(embed_dim, num_classes)

    def forward_attention(self, h, attn_mask=None, attn_only=True):
        h = self.patch_embed(h)
        A = self.global_attn(h)  # B x M x K
        A = torch.transpose(A, -2, -1)  # B x K x M
        if attn_mask is not None:
            A = A + (1 - attn_mask).unsqueeze(dim=1) * torch.finfo(A.dtype).min
        if attn_only:
            return A
        return h, A

    def forward_features(self, h, attn_mask=None, return_attention=True):
        h, A_base = self.forward_attention(h, attn_mask=attn_mask, attn_only=False)  # A == B x K x M
        A = F.softmax(A_base, dim=-1)  # softmax over N
        h = torch.bmm(A, h).squeeze(dim=1)  # B x K x C --> B x C
        log_dict = {'attention': A_base if return_attention else None}
        return h, log_dict


class ABMILModel(nn.Module):
    """FEATHER as published: ``abmil.base`` on CONCH v1.5 (in_dim 768) without a classifier (num_classes 0)."""

    def __init__(self, in_dim=768, num_classes=0):
        super().__init__()
        self.model = ABMIL(in_dim=in_dim, embed_dim=512, num_fc_layers=1, dropout=0.25, attn_dim=384, gate=True,
                           num_classes=num_classes)
