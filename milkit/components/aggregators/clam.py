"""CLAM: clustering-constrained attention MIL (Lu et al., Nature BME 2021, arXiv:2004.09666).

Reference code: mahmoodlab/CLAM, ``models/model_clam.py`` (CLAM_SB, CLAM_MB, inst_eval, inst_eval_out);
the "svm" instance loss is SmoothTop1SVM of oval-group/smooth-topk (Berrada et al., ICLR 2018).
"""

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.errors import MilkitError
from milkit.nn.masking import masked_softmax

SIZES = {"small": (512, 256), "big": (512, 384)}  # CLAM's size_dict: [in_dim, *SIZES[size_arg]]


class CLAMConfig(ComponentConfig):
    size_arg: Literal["small", "big"] = Field(
        "small", description="Widths [in_dim, 512, 256] ('small') or [in_dim, 512, 384] ('big').")
    gated: bool = Field(True, description="Gated attention (tanh * sigmoid), CLAM's default.")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout after the embedding and in the attention MLP.")
    k_sample: int = Field(
        8, gt=0, description="Patches per side (top-k / bottom-k attention) of the instance loss (CLAM's B).")
    n_classes: int = Field(
        2, ge=2, description="Classes of the head's label: one instance classifier (clam_mb: attention branch) each.")
    subtyping: bool = Field(
        True, description="Also train the other classes' instance classifiers on their top-k patches as negatives.")
    inst_loss: Literal["ce", "svm"] = Field(
        "ce", description="Instance loss: cross-entropy, or the smooth top-1 SVM (SmoothTop1SVM, tau = 1).")
    bag_weight: float = Field(
        0.7, gt=0.0, le=1.0, description="CLAM's bag_weight w: adds (1 - w) / w * instance loss; 1 = no clustering.")

    @property
    def inst_weight(self) -> float:
        """Weight of the instance loss relative to the head's: head + inst_weight * inst = CLAM's loss / bag_weight."""
        return (1.0 - self.bag_weight) / self.bag_weight


def smooth_top1_svm(logits: Tensor, target: Tensor, tau: float = 1.0, alpha: float = 1.0) -> Tensor:
    """SmoothTop1SVM (smooth-topk): tau * logsumexp((x + alpha [j != y] - x_y) / tau), the hard max
    where the top-2 gap exceeds tau * log(1e3); mean over rows."""
    margin = alpha * (torch.arange(logits.shape[1], device=logits.device) != target[:, None])  # r c
    x = logits + margin - logits.gather(1, target[:, None])                                 # r c
    top2 = logits.topk(2, dim=1).values                                                      # r 2
    hard = (top2[:, 0] - top2[:, 1]).detach() >= tau * math.log(1e3)                        # r
    return torch.where(hard, x.amax(1), tau * torch.logsumexp(x / tau, dim=1)).mean()


class CLAMSB(Aggregator):
    """CLAM-SB (Lu et al., 2021): fc -> gated attention -> attention-weighted mean (one branch).

    ``embedding`` is CLAM's bag feature M [B, 512] (the head's linear classifier is CLAM's
    ``classifiers``), ``attention`` the softmax over real patches. In training,
    :meth:`auxiliary_losses` adds CLAM's instance-level clustering loss (``inst_eval``). Where this
    differs from the reference code (padded batches, k clamped for small bags, the loss weight,
    attention-MLP dropout): docs/aggregators.md.
    """

    name = "clam_sb"
    Config = CLAMConfig
    returns_attention = True
    branches: ClassVar[str] = "single"

    def __init__(self, config: CLAMConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        e, d = SIZES[config.size_arg]
        c = config.n_classes if self.branches == "multi" else 1
        self.out_dim = c * e
        self.fc = nn.Sequential(nn.Linear(in_dim, e), nn.ReLU(), nn.Dropout(config.dropout))
        self.attention_a = nn.Sequential(nn.Linear(e, d), nn.Tanh(), nn.Dropout(config.dropout))
        self.attention_b = (nn.Sequential(nn.Linear(e, d), nn.Sigmoid(), nn.Dropout(config.dropout))
                            if config.gated else None)
        self.attention_c = nn.Linear(d, c)
        self.instance_classifiers = (nn.ModuleList(nn.Linear(e, 2) for _ in range(config.n_classes))
                                     if config.bag_weight < 1 else None)  # trained only by auxiliary_losses

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = self.fc(feats)                                               # b n e
        a = self.attention_a(h)                                          # b n d
        if self.attention_b is not None:
            a = a * self.attention_b(h)                                  # gate
        attn = masked_softmax(self.attention_c(a).transpose(1, 2), mask[:, None])  # b c n, 0 at padding
        bag = torch.einsum("bcn,bne->bce", attn, h)                      # b c e: CLAM's M per bag
        return AggregatorOutput(embedding=bag.flatten(1), attention=attn.mean(1),
                                aux={"features": h, "attention": attn, "mask": mask})

    def auxiliary_losses(self, out: AggregatorOutput, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """CLAM's clustering loss, mean over the bags with a label (-100 and empty bags are left out)."""
        if self.instance_classifiers is None:
            return {}
        labels, n_classes = targets["label"], self.config.n_classes
        if bool((labels >= n_classes).any()):
            raise MilkitError(f"aggregator '{self.name}' has n_classes = {n_classes} instance classifiers but got "
                              f"class index {int(labels.max())}; set [aggregator] n_classes = <the number of classes>")
        h, attn, mask = out.aux["features"], out.aux["attention"], out.aux["mask"]
        losses = [self._bag_loss(h[b][mask[b]], attn[b][:, mask[b]], int(y))        # n e, c n
                  for b, y in enumerate(labels.tolist()) if y >= 0 and bool(mask[b].any())]
        if not losses:
            return {"instance": h.new_zeros((), dtype=torch.float32)}
        return {"instance": self.config.inst_weight * torch.stack(losses).mean()}

    def _bag_loss(self, h: Tensor, attn: Tensor, label: int) -> Tensor:
        """h [n, e] and attention [c, n] of one bag's real patches -> inst_eval / inst_eval_out, summed."""
        cfg = self.config
        k = min(cfg.k_sample, h.shape[0])                                # small bags: k clamped to n
        loss_fn = smooth_top1_svm if cfg.inst_loss == "svm" else F.cross_entropy
        total = h.new_zeros((), dtype=torch.float32)
        for i, classifier in enumerate(self.instance_classifiers or ()):
            a = attn[i if attn.shape[0] > 1 else 0]                      # n: SB shares its one branch
            top = h[a.topk(k).indices]                                   # k e: most attended
            if i == label:                                               # in the class: top = 1, bottom = 0
                inst = torch.cat([top, h[(-a).topk(k).indices]])         # 2k e
                target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
            elif cfg.subtyping:                                          # out of the class: top = 0
                inst, target = top, torch.zeros(k, dtype=torch.long, device=h.device)
            else:
                continue
            total = total + loss_fn(classifier(inst).float(), target)   # mean over the sampled patches
        return total / cfg.n_classes if cfg.subtyping else total


class CLAMMB(CLAMSB):
    """CLAM-MB (Lu et al., 2021): one attention branch and one bag feature per class.

    ``embedding`` is the per-class bag features concatenated in class order [B, n_classes * 512];
    the head's linear layer on it contains CLAM-MB's per-class ``classifiers`` (Linear(512, 1) on
    feature c for logit c) as its block-diagonal case. ``attention`` is the mean of the per-class
    attentions (each a softmax over real patches); the per-class maps are ``aux["attention"]``.
    Instance classifier c samples from branch c's attention (``inst_eval(A[c], ...)``).
    """

    name = "clam_mb"
    branches = "multi"
