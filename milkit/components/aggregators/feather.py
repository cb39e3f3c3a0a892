"""FEATHER: an ABMIL pretrained on a 108-way pan-cancer classification (PC-108, 24K slides) over CONCH v1.5
features (Shao et al., "Do Multiple Instance Learning Models Transfer?", ICML 2025, arXiv:2506.09022).

Reference code: mahmoodlab/MIL-Lab ``src/models/abmil.py`` (``ABMIL.forward_features``, ``ABMILModel`` wrapping it
as ``self.model``), ``src/models/layers.py`` (``create_mlp``, ``GlobalGatedAttention``),
``src/model_configs/abmil/base.yaml`` (the defaults) and ``src/builder_utils.py`` (loading: ``module.`` stripped,
``model.`` prefix, the classifier dropped); the published model ``abmil.base.conch_v15.pc108-24k``
(huggingface.co/MahmoodLab/abmil.base.conch_v15.pc108-24k: ``model.safetensors``), used as TRIDENT's ``feather``
slide encoder (``forward_features``, 512-d). Differences: docs/aggregators.md.
"""

import torch
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput, FeatureSpec
from milkit.components.aggregators.slide_encoder import SlideEncoder, SlideEncoderConfig
from milkit.nn.masking import masked_softmax
from milkit.state_dict import strip_prefix


class FEATHERConfig(SlideEncoderConfig):
    embed_dim: int = Field(512, gt=0, description="Width of the patch embedding = the slide embedding (base.yaml).")
    attn_dim: int = Field(384, gt=0, description="Hidden width of the gated attention (base.yaml).")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout in both attention branches (base.yaml).")


class GlobalGatedAttention(nn.Module):
    """MIL-Lab's GlobalGatedAttention with num_classes = 1: x [b, n, e] -> unnormalised scores [b, n]."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.attention_c(self.attention_a(x) * self.attention_b(x)).squeeze(-1)


class FEATHER(SlideEncoder):
    """FEATHER-24K (MahmoodLab, 2025): MIL-Lab's ``abmil.base``, the PC-108-pretrained slide encoder.

    ``patch_embed`` (Linear(768 -> 512) + ReLU, ``create_mlp`` with one layer), gated attention
    (tanh ⊙ sigmoid, 512 -> 384 -> 1, dropout in both branches), softmax over the real patches, the
    attention-weighted mean: ``embedding`` [B, 512] (``forward_features``). The PC-108 classifier is
    not part of the published file; milkit's head replaces it. ``attention`` [B, N]: the softmax.
    """

    name = "feather"
    Config = FEATHERConfig
    returns_attention = True
    expected_features = FeatureSpec(encoders=("conch-v1.5",), dim=768)

    def __init__(self, config: FEATHERConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        self.out_dim = config.embed_dim
        self.patch_embed = nn.Sequential(nn.Linear(in_dim, config.embed_dim), nn.ReLU())
        self.global_attn = GlobalGatedAttention(config.embed_dim, config.attn_dim, config.dropout)
        self.load_published(self, convert=convert, ignore=("classifier.",),
                            expects="model.safetensors of huggingface.co/MahmoodLab/abmil.base.conch_v15.pc108-24k")

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = self.patch_embed(feats)                                    # b n e
        weights = masked_softmax(self.global_attn(h), mask)            # b n
        embedding = torch.einsum("bn,bne->be", weights, h)             # b e
        return AggregatorOutput(embedding=embedding, attention=weights)


def convert(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The HF file's keys (``model.patch_embed.0.weight``, ...; ``module.`` stripped as ``clean_state_dict``) ->
    :class:`FEATHER`'s; a PC-108 ``classifier`` (if present) is ignored, as ``keep_classifier=False`` drops it."""
    return strip_prefix(strip_prefix(state, ["module."]), ["model."])
