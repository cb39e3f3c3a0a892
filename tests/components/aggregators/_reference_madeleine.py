"""Minimal port of MADELEINE's H&E slide encoder (``encode_he``), for parity and key-layout tests only.

Ported from mahmoodlab/MADELEINE (Jaume et al., ECCV 2024): ``core/models/abmil.py`` @ c82d722
(BatchedABMIL) and ``madeleine/models/Model.py`` @ de7c85a (MADELEINE.__init__ / encode_he,
ABMILEmbedder with aggregation 'regular').

Changes from upstream, none affecting the numbers: no ``.to(self.device)`` / ``feats.to(device)`` (CPU),
``stain_encoding`` fixed to False (as ``create_model`` builds it), only the ``n_views == 1`` pooling
and the ``return_attention=False`` path are kept; the training ``forward`` is dropped. Every module
of the distributed ``model.pt`` (``token_projector`` included) is kept, so ``state_dict()`` has its keys.
"""

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

HE_POSITION = 0

DEFAULT_CONFIG = SimpleNamespace(MODALITIES=["HE", "ER", "PR", "HER2", "KI67"], wsi_encoder="abmil",
                                 patch_embedding_dim=512, wsi_encoder_hidden_dim=512, activation="softmax", n_heads=4)
"""process_args.py defaults = scripts/launch_pretrain_withoutStainEncodings.sh (modalities: ACROBAT's stains)."""


class BatchedABMIL(nn.Module):
    def __init__(self, input_dim=1024, hidden_dim=256, dropout=False, n_classes=1, n_heads=1, activation='softmax'):
        super(BatchedABMIL, self).__init__()
        self.activation = activation
        self.attention_a = nn.ModuleList([nn.Linear(input_dim, hidden_dim), nn.Tanh()])
        self.attention_b = nn.ModuleList([nn.Linear(input_dim, hidden_dim), nn.Sigmoid()])
        if dropout:
            self.attention_a.append(nn.Dropout(0.25))
            self.attention_b.append(nn.Dropout(0.25))
        self.attention_a = nn.Sequential(*self.attention_a)
        self.attention_b = nn.Sequential(*self.attention_b)
        self.attention_c = nn.Linear(hidden_dim, n_classes)

    def forward(self, x, return_raw_attention=False):
        a = self.attention_a(x)
        b = self.attention_b(x)
        A = a.mul(b)
        A = self.attention_c(A)  # N x n_classes
        assert self.activation == 'softmax'
        activated_A = F.softmax(A, dim=1)
        if return_raw_attention:
            return activated_A, A
        return activated_A


class ABMILEmbedder(nn.Module):
    def __init__(self, pre_attention_params=None, attention_params=None, aggregation='regular'):
        super(ABMILEmbedder, self).__init__()
        self.n_heads = attention_params['params']["n_heads"]
        params = pre_attention_params
        self.pre_attn = nn.Sequential(
            nn.Linear(params['input_dim'], params['hidden_dim']),
            nn.LayerNorm(params['hidden_dim']),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(params['hidden_dim'], params['hidden_dim']),
            nn.LayerNorm(params['hidden_dim']),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(params['hidden_dim'], params['hidden_dim'] * self.n_heads),
            nn.LayerNorm(params['hidden_dim'] * self.n_heads),
            nn.GELU(),
            nn.Dropout(0.1),
        )
        self.attn = nn.ModuleList([BatchedABMIL(**attention_params['params']) for i in range(self.n_heads)])
        self.agg_type = aggregation

    def forward(self, bags, return_attention=False):
        embeddings = self.pre_attn(bags)
        if self.n_heads > 1:
            embeddings = rearrange(embeddings, 'b t (e c) -> b t e c', c=self.n_heads)
        else:
            embeddings = embeddings.unsqueeze(-1)
        attention = []
        raw_attention = []
        for i, attn_net in enumerate(self.attn):
            processed_attention, untouched_attention = attn_net(embeddings[:, :, :, i], return_raw_attention=True)
            attention.append(processed_attention)
            raw_attention.append(untouched_attention)
        attention = torch.stack(attention, dim=-1)
        raw_attention = torch.stack(raw_attention, dim=-1)
        slide_embeddings = embeddings * attention
        slide_embeddings = torch.sum(slide_embeddings, dim=1)
        if return_attention:
            return slide_embeddings, raw_attention
        return slide_embeddings


class MADELEINE(nn.Module):
    def __init__(self, config=DEFAULT_CONFIG, stain_encoding=False):
        super(MADELEINE, self).__init__()
        self.config = config
        self.modalities = config.MODALITIES
        assert not stain_encoding
        pre_params = {'input_dim': self.config.patch_embedding_dim, 'hidden_dim': self.config.wsi_encoder_hidden_dim}
        attention_params = {'model': 'ABMIL', 'params': {
            'input_dim': self.config.wsi_encoder_hidden_dim, 'hidden_dim': 512, 'dropout': True,
            'activation': self.config.activation, 'n_heads': self.config.n_heads, 'n_classes': 1}}
        self.token_projector = nn.Linear(
            attention_params['params']['hidden_dim'] * attention_params['params']['n_heads'], 128)
        self.wsi_embedders = ABMILEmbedder(pre_params, attention_params)
        self.projector = nn.Linear(attention_params['params']['hidden_dim'] * attention_params['params']['n_heads'],
                                   attention_params['params']['hidden_dim'])

    def encode_he(self, feats):
        bs, _, _ = feats.shape
        n_mod = 1
        feats = feats.unsqueeze(dim=1)
        HE_embedding = self.wsi_embedders(feats[:, HE_POSITION, ::], return_attention=False)
        d_out, n_heads = HE_embedding.shape[-2], HE_embedding.shape[-1]
        HE_embedding = HE_embedding.view(bs * n_mod, d_out * n_heads)
        HE_embedding = self.projector(HE_embedding)
        HE_embedding = HE_embedding.view(bs, n_mod, d_out)
        return HE_embedding.squeeze(dim=1)

    def attention(self, feats):
        """The per-head softmax attention [1, n, n_heads] of ``ABMILEmbedder`` (for the tests)."""
        _, raw = self.wsi_embedders(feats, return_attention=True)
        return F.softmax(raw, dim=1)[..., 0, :]
