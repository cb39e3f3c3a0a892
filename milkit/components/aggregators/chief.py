"""CHIEF: the slide encoder of the Clinical Histopathology Imaging Evaluation Foundation model (Wang et al.,
Nature 2024, doi:10.1038/s41586-024-07894-z), over CTransPath patch features.

Reference code: hms-dbmi/CHIEF ``models/CHIEF.py`` (the inference ``CHIEF`` class: ``Attn_Net_Gated``,
``organ_embedding``, ``text_to_vision``), ``Get_CHIEF_WSI_level_feature.py`` (``CHIEF(size_arg="small",
dropout=True, n_classes=2)``, ``CHIEF_pretraining.pth`` loaded strictly, ``result['WSI_feature']``) and
``configs/anatomic_mapping.yaml`` (the 19 organ indices). Differences: docs/aggregators.md.
"""

from typing import Literal, get_args

import torch
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput, FeatureSpec
from milkit.components.aggregators.slide_encoder import SlideEncoder, SlideEncoderConfig
from milkit.nn.masking import masked_softmax

Organ = Literal["brain", "breast", "bladder", "kidney", "prostate", "testis", "lung", "pancreas", "liver", "skin",
                "ovary", "cervix", "uterus", "colon", "esophagus", "stomach", "thyroid", "adrenal gland",
                "soft tissue"]
ORGANS: tuple[str, ...] = get_args(Organ)
"""configs/anatomic_mapping.yaml: organ -> row of ``organ_embedding`` (brain = 0 ... soft tissue = 18)."""
TEXT_DIM = 768
"""Width of the CLIP text embeddings of the organ prompts (``organ_embedding`` [19, 768])."""
RENAMES = {"attention_net.0.": "fc.0.", "attention_net.3.attention_a.": "attn_a.",
           "attention_net.3.attention_b.": "attn_b.", "attention_net.3.attention_c.": "attn_c."}
"""CHIEF_pretraining.pth key prefix -> this module's (``attention_net`` is Sequential(fc, ReLU, Dropout, gated))."""
PRETRAINING_HEADS = ("classifiers.", "instance_classifiers.", "att_head.")
"""Keys of the file the slide embedding never uses: the pretraining's bag and instance classifiers and
``att_head`` (unused in the reference forward)."""


class CHIEFConfig(SlideEncoderConfig):
    embed_dim: int = Field(512, gt=0, description="Width after the first layer, = the slide embedding (size_arg "
                           "'small': [768, 512, 256]).")
    attn_dim: int = Field(256, gt=0, description="Hidden width of the gated attention (size_arg 'small').")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout after the first layer and in both attention "
                           "branches (the reference's dropout=True: 0.25).")
    organ: Organ | None = Field(
        None, description="Add the organ's text embedding to the slide embedding (the reference's "
        "'WSI_feature_anatomical', what its classifier sees; needs the file's organ_embedding and text_to_vision); "
        "None = 'WSI_feature', the embedding the authors extract.")


class CHIEF(SlideEncoder):
    """CHIEF's weakly supervised slide encoder (Wang et al., 2024): gated-attention MIL over CTransPath.

    Linear(768 -> 512) + ReLU, gated attention (tanh ⊙ sigmoid, 512 -> 256 -> 1), softmax over the
    real patches, attention-weighted mean of the 512-wide patch embeddings: ``WSI_feature`` [B, 512].
    With ``organ``, the CLIP text embedding of that organ, through ``text_to_vision``, is added (the
    reference's anatomical fusion). ``attention`` [B, N] is the softmax (0 at padding).
    """

    name = "chief"
    Config = CHIEFConfig
    returns_attention = True
    expected_features = FeatureSpec(encoders=("ctranspath",), dim=768)

    def __init__(self, config: CHIEFConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        e, k, p = config.embed_dim, config.attn_dim, config.dropout
        self.out_dim = e
        self.fc = nn.Sequential(nn.Linear(in_dim, e), nn.ReLU(), nn.Dropout(p))
        self.attn_a = nn.Sequential(nn.Linear(e, k), nn.Tanh(), nn.Dropout(p))
        self.attn_b = nn.Sequential(nn.Linear(e, k), nn.Sigmoid(), nn.Dropout(p))
        self.attn_c = nn.Linear(k, 1)
        self.text_to_vision: nn.Module | None = None
        ignore = PRETRAINING_HEADS
        if config.organ is None:
            ignore += ("text_to_vision.", "organ_embedding")
        else:
            self.text_to_vision = nn.Sequential(nn.Linear(TEXT_DIM, e), nn.ReLU(), nn.Dropout(0.25))
            self.register_buffer("organ_embedding", torch.randn(len(ORGANS), TEXT_DIM))  # from the weights file
        self.load_published(self, convert=rename, ignore=ignore,
                            expects="CHIEF_pretraining.pth from github.com/hms-dbmi/CHIEF (its Google Drive link)")

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = self.fc(feats)                                                  # b n e
        scores = self.attn_c(self.attn_a(h) * self.attn_b(h)).squeeze(-1)  # b n
        weights = masked_softmax(scores, mask)                              # b n
        embedding = torch.einsum("bn,bne->be", weights, h)                  # b e: WSI_feature
        if self.text_to_vision is not None:                                 # WSI_feature_anatomical
            organ = self.organ_embedding[ORGANS.index(self.config.organ)]   # 768
            embedding = embedding + self.text_to_vision(organ.to(h.dtype))
        return AggregatorOutput(embedding=embedding, attention=weights)


def rename(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """CHIEF_pretraining.pth keys -> :class:`CHIEF`'s (others unchanged: ignored, or reported as unexpected)."""
    out = {}
    for key, value in state.items():
        old = next((p for p in RENAMES if key.startswith(p)), None)
        out[RENAMES[old] + key[len(old):] if old else key] = value
    return out
