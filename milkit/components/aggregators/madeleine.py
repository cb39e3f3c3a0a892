"""MADELEINE: multistain-pretrained multi-head ABMIL slide encoder (Jaume et al., ECCV 2024, arXiv:2408.02859),
over CONCH v1 patch features.

Reference code: mahmoodlab/MADELEINE ``core/models/Model.py`` (``MADELEINE``: ``encode_he``, ``ABMILEmbedder``
with ``aggregation='regular'``, ``n_views=1``), ``core/models/abmil.py`` (``BatchedABMIL``), defaults from
``core/utils/process_args.py`` and ``scripts/launch_pretrain_withoutStainEncodings.sh`` (``--n_heads 4
--patch_embedding_dim 512 --wsi_encoder_hidden_dim 512 --activation softmax``), loading from
``madeleine/models/factory.py`` (HF ``MahmoodLab/madeleine``: ``model.pt``, ``stain_encoding=False``).
Differences: docs/aggregators.md.
"""

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput, FeatureSpec
from milkit.components.aggregators.slide_encoder import SlideEncoder, SlideEncoderConfig
from milkit.nn.masking import masked_softmax
from milkit.state_dict import strip_prefix


class MADELEINEConfig(SlideEncoderConfig):
    embed_dim: int = Field(512, gt=0, description="Width of each head's patch embedding and of the slide "
                           "embedding (wsi_encoder_hidden_dim = 512).")
    n_heads: int = Field(4, gt=0, description="Attention heads, each pooling its own embed_dim slice (n_heads 4).")
    attn_dim: int = Field(512, gt=0, description="Hidden width of each head's gated attention (512 in Model.py).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout of the three pre-attention blocks (0.1).")
    attn_dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout in both attention branches "
                                "(BatchedABMIL dropout=True: 0.25).")


class GatedAttention(nn.Module):
    """BatchedABMIL with n_classes = 1: x [b, n, e] -> unnormalised scores [b, n]."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.attention_c(self.attention_a(x) * self.attention_b(x)).squeeze(-1)


def block(d_in: int, d_out: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.GELU(), nn.Dropout(dropout)]


class MADELEINE(SlideEncoder):
    """MADELEINE's H&E slide encoder (Jaume et al., 2024): a shared pre-attention MLP, then multi-head ABMIL.

    Three Linear + LayerNorm + GELU blocks map each patch to n_heads x 512 (heads-last layout, as the
    reference's ``rearrange('b t (e c) -> b t e c')``); head c pools its 512-wide slice with its own
    gated attention (softmax over the real patches); the n_heads pooled vectors, flattened (e c), go
    through ``projector`` to ``embedding`` [B, 512] (``encode_he``). ``attention`` [B, N]: the mean of the
    heads' softmaxes (0 at padding); each head's is in ``aux["head_attention"]`` [B, N, n_heads].
    """

    name = "madeleine"
    Config = MADELEINEConfig
    returns_attention = True
    expected_features = FeatureSpec(encoders=("conch-v1",), dim=512)

    def __init__(self, config: MADELEINEConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        e, c = config.embed_dim, config.n_heads
        self.out_dim = e
        self.pre_attn = nn.Sequential(*block(in_dim, e, config.dropout), *block(e, e, config.dropout),
                                      *block(e, e * c, config.dropout))
        self.attn = nn.ModuleList(GatedAttention(e, config.attn_dim, config.attn_dropout) for _ in range(c))
        self.projector = nn.Linear(e * c, e)
        self.load_published(self, convert=convert, ignore=("token_projector.",),
                            expects="model.pt of huggingface.co/MahmoodLab/madeleine")

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = rearrange(self.pre_attn(feats), "b n (e c) -> b n e c", c=len(self.attn))        # b n e c
        scores = torch.stack([attn(h[..., i]) for i, attn in enumerate(self.attn)], dim=-1)  # b n c
        weights = masked_softmax(scores, mask[..., None], dim=1)                             # b n c
        pooled = torch.einsum("bnc,bnec->bec", weights, h)                                   # b e c
        embedding = self.projector(rearrange(pooled, "b e c -> b (e c)"))                    # b e
        return AggregatorOutput(embedding=embedding, attention=weights.mean(-1), aux={"head_attention": weights})


def convert(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """model.pt keys (``module.`` stripped, as ``create_model`` does) -> :class:`MADELEINE`'s: ``wsi_embedders.``
    dropped; ``token_projector`` (the pretraining's local-loss projection) is ignored."""
    state = strip_prefix(state, ["module."])
    return {k.removeprefix("wsi_embedders."): v for k, v in state.items()}
