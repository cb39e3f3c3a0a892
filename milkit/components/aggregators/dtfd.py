"""DTFD-MIL: double-tier feature distillation MIL (Zhang et al., CVPR 2022, arXiv:2203.12081).

Reference code: hrzhang1123/DTFD-MIL, ``Main_DTFD_MIL.py`` (train_attention_preFeature_DTFD),
``Model/Attention.py`` (Attention_Gated, Attention_with_Classifier), ``Model/network.py``
(DimReduction, Classifier_1fc) and ``utils.py`` (get_cam_1d). Differences: docs/aggregators.md.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.errors import MilkitError
from milkit.nn.gated_attention import GatedAttention
from milkit.nn.masking import masked_softmax


class DTFDConfig(ComponentConfig):
    num_groups: int = Field(4, gt=0, description="Pseudo-bags per slide (the reference's numGroup).")
    distill: Literal["AFS", "MaxMinS", "MaxS"] = Field(
        "AFS", description="Tier-1 -> tier-2 distillation: the attention-weighted feature of each pseudo-bag (AFS), "
        "or its highest (MaxS) / highest and lowest (MaxMinS) instances by Grad-CAM probability of the last class.")
    total_instance: int = Field(
        4, gt=0, description="MaxMinS/MaxS: instances kept over all pseudo-bags, total_instance // num_groups per "
        "pseudo-bag and side (the reference's total_instance).")
    embed_dim: int = Field(512, gt=0, description="Width after the dimension reduction (the reference's mDim).")
    attn_dim: int = Field(128, gt=0, description="Hidden width of both gated attentions (the reference's D).")
    num_res_blocks: int = Field(0, ge=0, description="Residual blocks after the reduction (numLayer_Res).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the tier-1 classifier (droprate).")
    n_classes: int = Field(2, ge=2, description="Outputs of the tier-1 classifier: the head's number of classes.")
    tier1_weight: float = Field(1.0, ge=0.0, description="Weight of the tier-1 loss added to the head's (tier-2) "
                                "loss; 0 with AFS builds no tier-1 classifier (nothing would use or train it).")

    @model_validator(mode="after")
    def _check(self) -> "DTFDConfig":
        if self.distill != "AFS" and self.total_instance < self.num_groups:
            raise ValueError(f"distill = '{self.distill}' keeps total_instance // num_groups instances per pseudo-bag: "
                             f"total_instance ({self.total_instance}) must be >= num_groups ({self.num_groups})")
        return self


class ResBlock(nn.Sequential):
    """The reference's residual_block: x + relu(W2 relu(W1 x)), no biases."""

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Linear(dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return x + super().forward(x)


class DTFD(Aggregator):
    """DTFD-MIL (Zhang et al., 2022): reduce -> pseudo-bags -> tier-1 AB-MIL -> distil -> tier-2 AB-MIL.

    Each bag's real patches are split into ``num_groups`` pseudo-bags (fewer when the bag has
    fewer patches), at random in training (torch's RNG) and by patch order in eval (patch i goes
    to pseudo-bag i mod G). Tier 1 pools each pseudo-bag with gated attention and classifies it
    (``auxiliary_losses``: the tier-1 loss); the distilled features are pooled by the tier-2
    gated attention into ``embedding`` [B, embed_dim]. The tier-2 classifier of the reference is
    milkit's head, so the head's loss is the tier-2 loss. ``attention`` [B, N]: a patch's tier-1
    attention within its pseudo-bag times its pseudo-bag's tier-2 weight, normalised over real patches.
    The reference clips gradient norms at 5: ``[train] grad_clip_norm = 5``.
    """

    name = "dtfd"
    Config = DTFDConfig
    returns_attention = True
    permutation_invariant = False  # eval pseudo-bags follow patch order (training ones are random)

    def __init__(self, config: DTFDConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        m = self.out_dim = config.embed_dim
        self.reduce = nn.Sequential(nn.Linear(in_dim, m, bias=False), nn.ReLU(),
                                    *(ResBlock(m) for _ in range(config.num_res_blocks)))
        self.attention1 = GatedAttention(m, config.attn_dim)
        self.dropout1 = nn.Dropout(config.dropout)
        self.classifier1 = (nn.Linear(m, config.n_classes)                # trained only by auxiliary_losses
                            if config.tier1_weight > 0 or config.distill != "AFS" else None)
        self.attention2 = GatedAttention(m, config.attn_dim)

    def pseudo_bags(self, n: int) -> Tensor:
        """Pseudo-bag of each of n real patches [n] (long, values 0..min(num_groups, n) - 1, balanced sizes)."""
        order = torch.randperm(n) if self.training else torch.arange(n)
        return order % max(min(self.config.num_groups, n), 1)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        g_max = self.config.num_groups
        embeddings, attentions, tier1 = [], [], []
        for bag, real in zip(feats, mask):                                 # variable-length bags, one at a time
            x = bag[real]                                                  # n d
            out = self._one_bag(x, self.pseudo_bags(x.shape[0]).to(x.device))
            embeddings.append(out["embedding"])
            attentions.append(torch.zeros(real.shape, dtype=out["attention"].dtype, device=real.device)
                              .masked_scatter(real, out["attention"]))     # n, 0 at padding
            tier1.append(F.pad(out["tier1_logits"], (0, 0, 0, g_max - out["tier1_logits"].shape[0])))  # g_max c
        aux = {"tier1_logits": torch.stack(tier1),                         # b g_max c (c = 0: no classifier)
               "tier1_mask": torch.arange(g_max, device=feats.device)[None] < mask.sum(1, keepdim=True)}  # b g_max
        return AggregatorOutput(embedding=torch.stack(embeddings), attention=torch.stack(attentions), aux=aux)

    def _one_bag(self, feats: Tensor, group: Tensor) -> dict[str, Tensor]:
        """feats [n, D] and pseudo-bag ids [n] of one bag -> embedding [m], attention [n],
        tier1_logits [g, c] and distilled [k, m] (k = g for AFS)."""
        cfg = self.config
        h = self.reduce(feats)                                             # n m
        g = int(group.max()) + 1 if len(group) else 0
        member = group[None] == torch.arange(g, device=h.device)[:, None]  # g n
        a1 = masked_softmax(self.attention1(h)[None].expand(g, -1), member)  # g n: softmax within each pseudo-bag
        pooled = a1 @ h                                                    # g m: attention-weighted features
        fc = self.classifier1
        tier1 = fc(self.dropout1(pooled)) if fc is not None else pooled[:, :0]  # g c
        if cfg.distill == "AFS" or fc is None:
            distilled, owner = pooled, torch.arange(g, device=h.device)    # g m, g
        else:
            cam = (a1.sum(0)[:, None] * h) @ fc.weight.T                   # n c: get_cam_1d, W (a_i h_i), no bias
            p_last = cam.softmax(-1)[:, -1]                                # n: probability of the last class
            k, picks = cfg.total_instance // cfg.num_groups, [group[:0]]
            for j in range(g):
                idx = member[j].nonzero().squeeze(1)
                ranked = idx[p_last[idx].argsort(descending=True)]         # most probable first
                picks += [ranked[:k], ranked[-k:]] if cfg.distill == "MaxMinS" else [ranked[:k]]
            owner = group[torch.cat(picks)]                                # k
            distilled = h[torch.cat(picks)]                                # k m: the selected instances
        a2 = torch.softmax(self.attention2(distilled), dim=0)              # k
        w_bag = a2.new_zeros(g).index_add(0, owner, a2)                    # g: tier-2 weight of each pseudo-bag
        attn = (a1 * w_bag[:, None]).sum(0)                                # n
        attn = attn / attn.sum().clamp_min(torch.finfo(attn.dtype).tiny)
        return {"embedding": a2 @ distilled, "attention": attn, "tier1_logits": tier1, "distilled": distilled}

    def auxiliary_losses(self, out: AggregatorOutput, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """``tier1``: tier1_weight * CE of every pseudo-bag's tier-1 logits against its slide's label,
        mean over each slide's pseudo-bags, then over the slides with a label (-100 is ignored)."""
        if self.classifier1 is None:
            return {}
        if "label" not in targets:
            raise MilkitError(f"aggregator '{self.name}' trains its tier-1 classifier on the slide's class "
                              "(targets['label']); use it with a classification head")
        labels, c = targets["label"], self.config.n_classes                # b
        if bool((labels >= c).any()):
            raise MilkitError(f"aggregator '{self.name}' has n_classes = {c} tier-1 outputs but got class index "
                              f"{int(labels.max())}; set [aggregator] n_classes = <the number of classes>")
        logits, real = out.aux["tier1_logits"].float(), out.aux["tier1_mask"]  # b g c, b g
        ce = F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(logits.shape[1]),
                             ignore_index=-100, reduction="none").view(real.shape)  # b g
        per_slide = (ce * real).sum(1) / real.sum(1).clamp_min(1)          # b
        used = (real.any(1) & (labels != -100)).float()                    # b
        return {"tier1": self.config.tier1_weight * (per_slide * used).sum() / used.sum().clamp_min(1)}
