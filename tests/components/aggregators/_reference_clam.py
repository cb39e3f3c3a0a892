"""CLAM's reference forward, re-implemented after upstream for parity tests only.

Follows mahmoodlab/CLAM ``models/model_clam.py`` (commit d7fe58b; Attn_Net, Attn_Net_Gated, CLAM_SB,
CLAM_MB with inst_eval / inst_eval_out) and oval-group/smooth-topk ``topk/svm.py`` + ``topk/functional.py``
(SmoothTop1SVM with Top1_Smooth_SVM / Top1_Hard_SVM / detect_large): the same module layout (so the
state-dict keys are upstream's), the same operations in the same order, one bag ``h [N, D]`` at a time
with no padding, as upstream. Written for this test, not copied; left out: ``attention_only``,
``return_features``, the numpy ``inst_preds``/``inst_labels`` bookkeeping, ``.cuda()``.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attn_Net(nn.Module):  # noqa: N801  (upstream's names)
    def __init__(self, L=1024, D=256, dropout=False, n_classes=1):
        super().__init__()
        layers = [nn.Linear(L, D), nn.Tanh()]
        if dropout:
            layers.append(nn.Dropout(0.25))
        layers.append(nn.Linear(D, n_classes))
        self.module = nn.Sequential(*layers)

    def forward(self, x):
        return self.module(x), x


class Attn_Net_Gated(nn.Module):  # noqa: N801
    def __init__(self, L=1024, D=256, dropout=False, n_classes=1):
        super().__init__()
        a, b = [nn.Linear(L, D), nn.Tanh()], [nn.Linear(L, D), nn.Sigmoid()]
        if dropout:
            a.append(nn.Dropout(0.25))
            b.append(nn.Dropout(0.25))
        self.attention_a, self.attention_b = nn.Sequential(*a), nn.Sequential(*b)
        self.attention_c = nn.Linear(D, n_classes)

    def forward(self, x):
        return self.attention_c(self.attention_a(x).mul(self.attention_b(x))), x


class CLAM_SB(nn.Module):  # noqa: N801
    def __init__(self, gate=True, size_arg="small", dropout=0.0, k_sample=8, n_classes=2,
                 instance_loss_fn=None, subtyping=False, embed_dim=1024):
        super().__init__()
        size = {"small": [embed_dim, 512, 256], "big": [embed_dim, 512, 384]}[size_arg]
        net = (Attn_Net_Gated if gate else Attn_Net)(L=size[1], D=size[2], dropout=dropout,
                                                     n_classes=self._branches(n_classes))
        self.attention_net = nn.Sequential(nn.Linear(size[0], size[1]), nn.ReLU(), nn.Dropout(dropout), net)
        self._bag_classifiers(size[1], n_classes)
        self.instance_classifiers = nn.ModuleList([nn.Linear(size[1], 2) for _ in range(n_classes)])
        self.k_sample, self.n_classes, self.subtyping = k_sample, n_classes, subtyping
        self.instance_loss_fn = instance_loss_fn or nn.CrossEntropyLoss()

    @staticmethod
    def _branches(n_classes):
        return 1

    def _bag_classifiers(self, width, n_classes):
        self.classifiers = nn.Linear(width, n_classes)

    def inst_eval(self, A, h, classifier):
        """In the class: the k most attended patches are positives (1), the k least negatives (0)."""
        A = A.view(1, -1) if A.dim() == 1 else A
        top_p = torch.index_select(h, 0, torch.topk(A, self.k_sample)[1][-1])
        top_n = torch.index_select(h, 0, torch.topk(-A, self.k_sample, dim=1)[1][-1])
        targets = torch.cat([torch.full((self.k_sample,), 1).long(), torch.full((self.k_sample,), 0).long()])
        logits = classifier(torch.cat([top_p, top_n], dim=0))
        return self.instance_loss_fn(logits, targets)

    def inst_eval_out(self, A, h, classifier):
        """Out of the class: the k most attended patches are negatives (0)."""
        A = A.view(1, -1) if A.dim() == 1 else A
        top_p = torch.index_select(h, 0, torch.topk(A, self.k_sample)[1][-1])
        return self.instance_loss_fn(classifier(top_p), torch.full((self.k_sample,), 0).long())

    def _branch(self, A, i):
        return A

    def instance_loss(self, A, h, label):
        total = 0.0
        inst_labels = F.one_hot(label, num_classes=self.n_classes).squeeze()
        for i, classifier in enumerate(self.instance_classifiers):
            if inst_labels[i].item() == 1:
                total += self.inst_eval(self._branch(A, i), h, classifier)
            elif self.subtyping:
                total += self.inst_eval_out(self._branch(A, i), h, classifier)
        if self.subtyping:
            total /= len(self.instance_classifiers)
        return total

    def bag_logits(self, M):
        return self.classifiers(M)

    def forward(self, h, label=None, instance_eval=False):
        """h [N, D] -> (logits [1, C], raw attention [K, N], softmax attention [K, N], M [K, E], results)."""
        A, h = self.attention_net(h)
        A_raw = torch.transpose(A, 1, 0)
        A = F.softmax(A_raw, dim=1)
        results = {"instance_loss": self.instance_loss(A, h, label)} if instance_eval else {}
        M = torch.mm(A, h)
        return self.bag_logits(M), A_raw, A, M, results


class CLAM_MB(CLAM_SB):  # noqa: N801
    @staticmethod
    def _branches(n_classes):
        return n_classes

    def _bag_classifiers(self, width, n_classes):
        self.classifiers = nn.ModuleList([nn.Linear(width, 1) for _ in range(n_classes)])

    def _branch(self, A, i):
        return A[i]

    def bag_logits(self, M):
        logits = torch.empty(1, self.n_classes).float()
        for c in range(self.n_classes):
            logits[0, c] = self.classifiers[c](M[c])
        return logits


class SmoothTop1SVM(nn.Module):
    """smooth-topk's SmoothTop1SVM(n_classes, alpha=None -> 1, tau=1): rows whose top-2 gap reaches
    tau * log(1e3) take the hard multiclass hinge, the others its log-sum-exp smoothing; sum / rows."""

    def __init__(self, n_classes, alpha=None, tau=1.0):
        super().__init__()
        self.alpha, self.tau, self.thresh = 1.0 if alpha is None else alpha, float(tau), 1e3
        self.register_buffer("labels", torch.arange(n_classes))

    def _delta(self, y):
        return self.alpha * torch.ne(y[:, None], self.labels[None, :]).float()

    def _smooth(self, x, y):
        z = (x + self._delta(y) - x.gather(1, y[:, None])) / self.tau
        m = z.max(1)[0]                                                   # upstream's log_sum_exp
        return self.tau * (m + torch.log(torch.sum(torch.exp(z - m[:, None]), 1)))

    def _hard(self, x, y):
        return (x + self._delta(y)).max(1)[0] - x.gather(1, y[:, None]).squeeze()

    def forward(self, x, y):
        top = x.topk(2, 1)[0]
        hard = torch.ge(top[:, 0] - top[:, 1], 1 * self.tau * math.log(self.thresh)).detach()
        smooth = hard.eq(0)
        loss = 0
        if smooth.sum():
            loss += self._smooth(x[smooth].view(-1, x.size(1)), y[smooth]).sum() / x.size(0)
        if hard.sum():
            loss += self._hard(x[hard].view(-1, x.size(1)), y[hard]).sum() / x.size(0)
        return loss
