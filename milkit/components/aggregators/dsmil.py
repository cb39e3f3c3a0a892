"""DSMIL: dual-stream MIL (Li, Li & Eliceiri, CVPR 2021, arXiv:2011.08939).

Reference code: binli123/dsmil-wsi, ``dsmil.py`` (FCLayer, BClassifier, MILNet) and ``train_tcga.py``
(the loss 0.5 * bag + 0.5 * max-instance, BCEWithLogitsLoss, and the defaults). Differences: docs/aggregators.md.
"""

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.errors import MilkitError
from milkit.nn.masking import masked_max, masked_softmax


class DSMILConfig(ComponentConfig):
    n_classes: int = Field(
        2, ge=1, description="Instance-classifier outputs, one critical instance and one bag embedding each: the "
        "head's number of classes, or 1 for a binary task scored by its class of index 1 (train_tcga.py num_classes).")
    query_dim: int = Field(128, gt=0, description="Width of the queries (fixed to 128 in BClassifier).")
    nonlinear: bool = Field(True, description="Query network Linear-ReLU-Linear-Tanh instead of one Linear "
                            "(BClassifier nonlinear; train_tcga.py --non_linearity 1).")
    passing_v: bool = Field(False, description="Values V = ReLU(Linear(dropout(h))) instead of the features "
                            "themselves (BClassifier passing_v).")
    dropout_v: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the value Linear; only with "
                             "passing_v (BClassifier dropout_v; train_tcga.py --dropout_node 0).")
    instance_weight: float = Field(
        1.0, ge=0.0, description="Weight of the max-instance loss added to the head's (bag) loss: the reference's "
        "0.5 * bag + 0.5 * max is head + 1.0 * max_instance, times 2.")


class DSMIL(Aggregator):
    """DSMIL (Li et al., 2021): instance stream (max-pooled instance scores) + bag stream (attention to the
    critical instance of each class).

    The instance classifier (FCLayer) scores every patch per class; the highest-scoring real patch of
    class c is its critical instance. Every patch's query is compared with the critical one's (dot
    product / sqrt(query_dim), softmax over the bag's real patches): A [B, C, N]; the bag embedding
    of class c is the A-weighted sum of the values, B [B, C, K]. ``embedding`` is B flattened [B, C * K]:
    the reference's bag classifier ``fcc`` = Conv1d(C, C, kernel_size=K) on B is exactly a
    Linear(C * K, C) on it, which is the classification head's linear layer. ``attention`` [B, N] is the
    mean over classes of A (per-class maps: ``aux["attention"]``). ``auxiliary_losses``: the instance
    stream's loss, BCE of the max instance scores against the slide's one-hot class (train_tcga.py).
    """

    name = "dsmil"
    Config = DSMILConfig
    returns_attention = True

    def __init__(self, config: DSMILConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        k, c, q = in_dim, config.n_classes, config.query_dim
        self.out_dim = c * k
        self.instance_classifier = nn.Linear(k, c)                          # FCLayer.fc (i_classifier)
        self.q = (nn.Sequential(nn.Linear(k, q), nn.ReLU(), nn.Linear(q, q), nn.Tanh())
                  if config.nonlinear else nn.Linear(k, q))
        self.v = (nn.Sequential(nn.Dropout(config.dropout_v), nn.Linear(k, k), nn.ReLU())
                  if config.passing_v else nn.Identity())

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        scores = self.instance_classifier(feats)                            # b n c: instance stream
        filled = scores.masked_fill(~mask[..., None], torch.finfo(scores.dtype).min)
        critical = filled.argmax(1)                                         # b c: critical instance per class
        queries = self.q(feats)                                             # b n q
        q_max = queries.gather(1, critical[..., None].expand(-1, -1, queries.shape[-1]))  # b c q
        logits = torch.einsum("bnq,bcq->bcn", queries, q_max) / math.sqrt(queries.shape[-1])  # b c n
        attn = masked_softmax(logits, mask[:, None])                        # b c n: A, 0 at padding
        bag = torch.einsum("bcn,bnv->bcv", attn, self.v(feats))             # b c k: B, one embedding per class
        aux = {"instance_logits": scores, "max_logits": masked_max(scores, mask), "attention": attn, "mask": mask}
        return AggregatorOutput(embedding=bag.flatten(1), attention=attn.mean(1), aux=aux)

    def auxiliary_losses(self, out: AggregatorOutput, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """``max_instance``: instance_weight * BCE-with-logits of each slide's max instance scores [C]
        against its one-hot class (C = 1: [class == 1]), mean over classes, then over the slides with a
        label and at least one patch (-100 is ignored)."""
        if "label" not in targets:
            raise MilkitError(f"aggregator '{self.name}' trains its instance classifier on the slide's class "
                              "(targets['label']); use it with a classification head")
        labels, c = targets["label"], self.config.n_classes                # b
        if bool((labels >= max(c, 2)).any()):
            raise MilkitError(f"aggregator '{self.name}' has n_classes = {c} instance outputs but got class index "
                              f"{int(labels.max())}; set [aggregator] n_classes = <the number of classes>"
                              + (" (1 only for two classes)" if c == 1 else ""))
        max_logits = out.aux["max_logits"].float()                          # b c
        onehot = F.one_hot(labels.clamp_min(0), max(c, 2))[:, -c:].float()  # b c (c = 1: class 1 = positive)
        bce = F.binary_cross_entropy_with_logits(max_logits, onehot, reduction="none").mean(1)  # b
        used = ((labels != -100) & out.aux["mask"].any(1)).float()          # b
        return {"max_instance": self.config.instance_weight * (bce * used).sum() / used.sum().clamp_min(1)}
