"""Minimal port of DSMIL's forward and training loss for one bag, for parity tests only.

Ported from binli123/dsmil-wsi (MIT License, Copyright (c) 2020 Bin Li): ``dsmil.py`` (FCLayer,
BClassifier, MILNet) and the per-bag body of ``train`` in ``train_tcga.py`` (commit 59a62b5).
``BClassifier`` is the form with ``nonlinear`` and ``passing_v`` that ``train_tcga.py`` calls
(``BClassifier(input_size, output_class, dropout_v, nonlinear)``); the stored snapshot of ``dsmil.py``
at cdf926d predates those two arguments (q = Linear(K, 128), v = Dropout + Linear(K, K)), so this
form was read from verbatim copies of the later upstream file in downstream repositories.

Changes from upstream, none affecting the numbers: plain CPU torch (``.cuda()``, ``Variable`` and the
unused ``device`` removed), ``dsmil_bag_loss`` takes the label as a one-hot tensor instead of reading
it from a CSV, and the optimiser step is left out (the losses are returned instead).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class FCLayer(nn.Module):
    def __init__(self, in_size, out_size=1):
        super(FCLayer, self).__init__()
        self.fc = nn.Sequential(nn.Linear(in_size, out_size))

    def forward(self, feats):
        x = self.fc(feats)
        return feats, x


class BClassifier(nn.Module):
    def __init__(self, input_size, output_class, dropout_v=0.0, nonlinear=True, passing_v=False):  # K, L, N
        super(BClassifier, self).__init__()
        if nonlinear:
            self.q = nn.Sequential(nn.Linear(input_size, 128), nn.ReLU(), nn.Linear(128, 128), nn.Tanh())
        else:
            self.q = nn.Linear(input_size, 128)
        if passing_v:
            self.v = nn.Sequential(
                nn.Dropout(dropout_v),
                nn.Linear(input_size, input_size),
                nn.ReLU()
            )
        else:
            self.v = nn.Identity()

        ### 1D convolutional layer that can handle multiple class (including binary)
        self.fcc = nn.Conv1d(output_class, output_class, kernel_size=input_size)

    def forward(self, feats, c):  # N x K, N x C
        V = self.v(feats)  # N x V, unsorted
        Q = self.q(feats).view(feats.shape[0], -1)  # N x Q, unsorted

        # handle multiple classes without for loop
        _, m_indices = torch.sort(c, 0, descending=True)  # sort class scores along the instance dimension, m_indices in shape N x C
        m_feats = torch.index_select(feats, dim=0, index=m_indices[0, :])  # select critical instances, m_feats in shape C x K
        q_max = self.q(m_feats)  # compute queries of critical instances, q_max in shape C x Q
        A = torch.mm(Q, q_max.transpose(0, 1))  # compute inner product of Q to each entry of q_max, A in shape N x C, each column contains unnormalized attention scores
        A = F.softmax(A / torch.sqrt(torch.tensor(Q.shape[1], dtype=torch.float32)), 0)  # normalize attention scores, A in shape N x C,
        B = torch.mm(A.transpose(0, 1), V)  # compute bag representation, B in shape C x V

        B = B.view(1, B.shape[0], B.shape[1])  # 1 x C x V
        C = self.fcc(B)  # 1 x C x 1
        C = C.view(1, -1)
        return C, A, B


class MILNet(nn.Module):
    def __init__(self, i_classifier, b_classifier):
        super(MILNet, self).__init__()
        self.i_classifier = i_classifier
        self.b_classifier = b_classifier

    def forward(self, x):
        feats, classes = self.i_classifier(x)
        prediction_bag, A, B = self.b_classifier(feats, classes)

        return classes, prediction_bag, A, B


def dsmil_bag_loss(milnet, bag_feats, bag_label):
    """One bag through ``milnet`` and the loss of ``train_tcga.py``'s ``train`` (criterion = BCEWithLogitsLoss).

    Returns (bag_loss, max_loss, loss = 0.5 * bag_loss + 0.5 * max_loss).
    """
    criterion = nn.BCEWithLogitsLoss()
    ins_prediction, bag_prediction, _, _ = milnet(bag_feats)
    max_prediction, _ = torch.max(ins_prediction, 0)
    bag_loss = criterion(bag_prediction.view(1, -1), bag_label.view(1, -1))
    max_loss = criterion(max_prediction.view(1, -1), bag_label.view(1, -1))
    loss = 0.5 * bag_loss + 0.5 * max_loss
    return bag_loss, max_loss, loss
