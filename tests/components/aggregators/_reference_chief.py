"""Minimal port of CHIEF's inference model, for parity and key-layout tests only.

Ported from hms-dbmi/CHIEF @ 724a374 (GPLv3, non-commercial academic use; Wang et al., Nature 2024),
``models/CHIEF.py``: Att_Head, Attn_Net, Attn_Net_Gated and the inference ``CHIEF`` class, as
``Get_CHIEF_WSI_level_feature.py`` builds it (``CHIEF(size_arg="small", dropout=True, n_classes=2)``).

Changes from upstream, none affecting the numbers: ``organ_embedding`` keeps its random init instead of
loading ``./model_weight/Text_emdding.pth`` (the tests copy it), ``initialize_weights`` and ``print(size)``
are left out (weights are copied in), ``relocate``/``patch_probs`` are dropped. Every module of the
distributed ``CHIEF_pretraining.pth`` is kept, so ``state_dict()`` has its key names and shapes.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Att_Head(nn.Module):
    def __init__(self, FEATURE_DIM, ATT_IM_DIM):
        super(Att_Head, self).__init__()
        self.fc1 = nn.Linear(FEATURE_DIM, ATT_IM_DIM)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(ATT_IM_DIM, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.fc2(self.relu(self.fc1(x))))


class Attn_Net_Gated(nn.Module):
    def __init__(self, L=1024, D=256, dropout=False, n_classes=1):
        super(Attn_Net_Gated, self).__init__()
        self.attention_a = [nn.Linear(L, D), nn.Tanh()]
        self.attention_b = [nn.Linear(L, D), nn.Sigmoid()]
        if dropout:
            self.attention_a.append(nn.Dropout(0.25))
            self.attention_b.append(nn.Dropout(0.25))
        self.attention_a = nn.Sequential(*self.attention_a)
        self.attention_b = nn.Sequential(*self.attention_b)
        self.attention_c = nn.Linear(D, n_classes)

    def forward(self, x):
        a = self.attention_a(x)
        b = self.attention_b(x)
        A = a.mul(b)
        A = self.attention_c(A)  # N x n_classes
        return A, x


class CHIEF(nn.Module):
    def __init__(self, gate=True, size_arg="large", dropout=True, n_classes=2, **kwargs):
        super(CHIEF, self).__init__()
        self.size_dict = {'xs': [384, 256, 256], "small": [768, 512, 256], "big": [1024, 512, 384],
                          'large': [2048, 1024, 512]}
        size = self.size_dict[size_arg]
        fc = [nn.Linear(size[0], size[1]), nn.ReLU()]
        if dropout:
            fc.append(nn.Dropout(0.25))
        assert gate  # the published model is gated (Attn_Net is never used)
        attention_net = Attn_Net_Gated(L=size[1], D=size[2], dropout=dropout, n_classes=1)
        fc.append(attention_net)
        self.attention_net = nn.Sequential(*fc)
        self.classifiers = nn.Linear(size[1], n_classes)
        instance_classifiers = [nn.Linear(size[1], 2) for i in range(n_classes)]
        self.instance_classifiers = nn.ModuleList(instance_classifiers)
        self.n_classes = n_classes

        self.att_head = Att_Head(size[1], size[2])
        self.register_buffer('organ_embedding', torch.randn(19, 768))
        self.text_to_vision = nn.Sequential(nn.Linear(768, size[1]), nn.ReLU(), nn.Dropout(p=0.25))

    def forward(self, h, x_anatomic):
        batch = x_anatomic
        A, h = self.attention_net(h)
        A = torch.transpose(A, 1, 0)
        A_raw = A
        A = F.softmax(A, dim=1)

        embed_batch = self.organ_embedding[batch]
        embed_batch = self.text_to_vision(embed_batch)
        WSI_feature = torch.mm(A, h)

        M = WSI_feature + embed_batch

        logits = self.classifiers(M)

        result = {
            'bag_logits': logits,
            'attention_raw': A_raw,
            'WSI_feature': WSI_feature,
            'WSI_feature_anatomical': M
        }
        return result
