"""Minimal port of DTFD-MIL's tier-1/tier-2 forward for one slide, for parity tests only.

Ported from hrzhang1123/DTFD-MIL (MIT License, Copyright (c) 2022 Hongrun Zhang):
``Model/network.py`` (Classifier_1fc, residual_block, DimReduction), ``Model/Attention.py``
(Attention_Gated, Attention_with_Classifier), ``utils.py`` (get_cam_1d) and the per-slide body
of ``train_attention_preFeature_DTFD`` in ``Main_DTFD_MIL.py``.

Changes from upstream, none affecting the numbers: plain CPU torch (``.to(device)`` removed),
the pseudo-bag split (``index_chunk_list``) is passed in instead of drawn with ``random.shuffle``
and ``np.array_split``, the two optimiser steps are left out (the losses are returned instead).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Classifier_1fc(nn.Module):
    def __init__(self, n_channels, n_classes, droprate=0.0):
        super().__init__()
        self.fc = nn.Linear(n_channels, n_classes)
        self.droprate = droprate
        if self.droprate != 0.0:
            self.dropout = nn.Dropout(p=self.droprate)

    def forward(self, x):
        if self.droprate != 0.0:
            x = self.dropout(x)
        return self.fc(x)


class residual_block(nn.Module):
    def __init__(self, nChn=512):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(nChn, nChn, bias=False), nn.ReLU(inplace=True),
                                   nn.Linear(nChn, nChn, bias=False), nn.ReLU(inplace=True))

    def forward(self, x):
        return x + self.block(x)


class DimReduction(nn.Module):
    def __init__(self, n_channels, m_dim=512, numLayer_Res=0):
        super().__init__()
        self.fc1 = nn.Linear(n_channels, m_dim, bias=False)
        self.relu1 = nn.ReLU(inplace=True)
        self.numRes = numLayer_Res
        self.resBlocks = nn.Sequential(*[residual_block(m_dim) for _ in range(numLayer_Res)])

    def forward(self, x):
        x = self.relu1(self.fc1(x))
        if self.numRes > 0:
            x = self.resBlocks(x)
        return x


class Attention_Gated(nn.Module):
    def __init__(self, L=512, D=128, K=1):
        super().__init__()
        self.attention_V = nn.Sequential(nn.Linear(L, D), nn.Tanh())
        self.attention_U = nn.Sequential(nn.Linear(L, D), nn.Sigmoid())
        self.attention_weights = nn.Linear(D, K)

    def forward(self, x, isNorm=True):
        A = self.attention_weights(self.attention_V(x) * self.attention_U(x))  # N x K
        A = torch.transpose(A, 1, 0)                                          # K x N
        if isNorm:
            A = F.softmax(A, dim=1)
        return A


class Attention_with_Classifier(nn.Module):
    def __init__(self, L=512, D=128, K=1, num_cls=2, droprate=0):
        super().__init__()
        self.attention = Attention_Gated(L, D, K)
        self.classifier = Classifier_1fc(L, num_cls, droprate)

    def forward(self, x):
        AA = self.attention(x)      # K x N
        afeat = torch.mm(AA, x)     # K x L
        return self.classifier(afeat)


def get_cam_1d(classifier, features):
    tweight = list(classifier.parameters())[-2]
    return torch.einsum("bgf,cf->bcg", [features, tweight])


def dtfd_slide(tfeat_tensor, tslideLabel, index_chunk_list, dimReduction, attention, classifier, UClassifier,
               distill="AFS", total_instance=4, numGroup=4):
    """One slide through both tiers, as the training loop does.

    Returns (slide_sub_preds [numGroup, C], slide_pseudo_feat [k, mDim], gSlidePred [1, C], loss0, loss1).
    """
    ce_cri = nn.CrossEntropyLoss(reduction="none")
    instance_per_group = total_instance // numGroup
    slide_pseudo_feat, slide_sub_preds, slide_sub_labels = [], [], []
    for tindex in index_chunk_list:
        slide_sub_labels.append(tslideLabel)
        subFeat_tensor = torch.index_select(tfeat_tensor, dim=0, index=torch.LongTensor(tindex))
        tmidFeat = dimReduction(subFeat_tensor)
        tAA = attention(tmidFeat).squeeze(0)
        tattFeats = torch.einsum("ns,n->ns", tmidFeat, tAA)           # n x fs
        tattFeat_tensor = torch.sum(tattFeats, dim=0).unsqueeze(0)    # 1 x fs
        tPredict = classifier(tattFeat_tensor)                        # 1 x C
        slide_sub_preds.append(tPredict)

        patch_pred_logits = get_cam_1d(classifier, tattFeats.unsqueeze(0)).squeeze(0)  # C x n
        patch_pred_logits = torch.transpose(patch_pred_logits, 0, 1)                    # n x C
        patch_pred_softmax = torch.softmax(patch_pred_logits, dim=1)
        _, sort_idx = torch.sort(patch_pred_softmax[:, -1], descending=True)
        topk_idx_max = sort_idx[:instance_per_group].long()
        topk_idx_min = sort_idx[-instance_per_group:].long()
        topk_idx = torch.cat([topk_idx_max, topk_idx_min], dim=0)

        MaxMin_inst_feat = tmidFeat.index_select(dim=0, index=topk_idx)
        max_inst_feat = tmidFeat.index_select(dim=0, index=topk_idx_max)
        if distill == "MaxMinS":
            slide_pseudo_feat.append(MaxMin_inst_feat)
        elif distill == "MaxS":
            slide_pseudo_feat.append(max_inst_feat)
        elif distill == "AFS":
            slide_pseudo_feat.append(tattFeat_tensor)

    slide_pseudo_feat = torch.cat(slide_pseudo_feat, dim=0)
    slide_sub_preds = torch.cat(slide_sub_preds, dim=0)
    slide_sub_labels = torch.cat(slide_sub_labels, dim=0)
    loss0 = ce_cri(slide_sub_preds, slide_sub_labels).mean()
    gSlidePred = UClassifier(slide_pseudo_feat)
    loss1 = ce_cri(gSlidePred, tslideLabel).mean()
    return slide_sub_preds, slide_pseudo_feat, gSlidePred, loss0, loss1
