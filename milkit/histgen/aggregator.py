"""HistGen's visual side as a milkit aggregator: projection, prototype memory step, HAT encoder."""

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.histgen.blocks import MultiHeadAttention
from milkit.histgen.cmn import CrossModalMemory
from milkit.histgen.encoder import HATEncoder
from milkit.histgen.regions import RegionLayout, scan_layout, spatial_layout
from milkit.nn.masking import masked_softmax


class HistGenConfig(ComponentConfig):
    variant: Literal["fixed", "faithful"] = Field(
        "fixed", description="'faithful' = the published function (quirks kept, loads official weights); "
        "'fixed' = region token feeds the slide encoder, masks honoured, batched (docs/histgen.md)."
    )
    d_vf: int = Field(2048, gt=0, description="Width of the first patch projection (wsi_mapping).")
    d_model: int = Field(512, gt=0, description="Transformer width (must equal the report head's d_model).")
    num_heads: int = Field(8, gt=0, description="Attention heads everywhere (encoder and memory).")
    d_ff: int = Field(512, gt=0, description="Hidden width of the transformer feed-forward blocks.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Attention, residual, FFN and PE dropout.")
    drop_prob_lm: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout on the projected patch tokens.")
    region_size: int = Field(96, ge=2, description="Tokens per region: region_size - 1 patches + 1 region token.")
    prototype_num: int = Field(512, gt=0, description="Evenly spaced patches used as memory queries (repeat when fewer).")
    cmm_size: int = Field(2048, gt=0, description="Slots of the cross-modal memory.")
    cmm_dim: int = Field(512, gt=0, description="Width of a memory slot (must equal d_model).")
    topk: int = Field(512, gt=0, description="Memory slots each query attends to.")
    region_order: Literal["scan", "spatial"] = Field(
        "scan", description="'scan': runs of patches in file order (HistGen); 'spatial': runs along a "
        "Hilbert curve through the patch grid (coords), i.e. compact blocks (fixed variant only)."
    )
    slide_pool_dim: int = Field(128, gt=0, description="Hidden width of the slide-level attention pool (fixed).")

    @model_validator(mode="after")
    def _check(self) -> "HistGenConfig":
        if self.cmm_dim != self.d_model:
            raise ValueError(f"cmm_dim ({self.cmm_dim}) must equal d_model ({self.d_model})")
        if self.topk > self.cmm_size:
            raise ValueError(f"topk ({self.topk}) cannot exceed cmm_size ({self.cmm_size})")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.variant == "faithful" and self.region_order != "scan":
            raise ValueError("variant = 'faithful' uses region_order = 'scan' (HistGen's order)")
        return self


class HistGen(Aggregator):
    """HistGen's local-global hierarchical visual encoder (Guo et al., MICCAI 2024, arXiv:2403.05396).

    Patches are projected (D -> d_vf -> d), enriched by attention to the cross-modal memory's
    responses to ``prototype_num`` evenly spaced patches, grouped into regions and encoded
    by the two-layer HAT encoder. ``tokens`` are the R region vectors the report decoder
    attends to; ``embedding`` pools them (attention in 'fixed', mean in 'faithful', which
    adds no parameters); ``attention`` = within-region pooling weight x region weight.

    Differences from the paper: 'fixed' (default) corrects the published code's defects
    (docs/histgen.md); 'faithful' keeps them. Ported from dddavid4real/HistGen @ 31a40af.
    """

    name = "histgen"
    Config = HistGenConfig
    returns_attention = True
    provides_tokens = True
    permutation_invariant = False

    def __init__(self, config: HistGenConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        c = config
        self.out_dim = c.d_model
        self.wsi_mapping = nn.Linear(in_dim, c.d_vf)
        self.att_embed = nn.Sequential(nn.Linear(c.d_vf, c.d_model), nn.ReLU(), nn.Dropout(c.drop_prob_lm))
        self.cmn = CrossModalMemory(c.cmm_dim, c.cmm_size, c.num_heads, c.topk, c.dropout)
        self.attn_mem = MultiHeadAttention(c.d_model, c.num_heads, c.dropout)
        self.encoder = HATEncoder(c.d_model, c.num_heads, c.d_ff, c.dropout, c.region_size,
                                  faithful=c.variant == "faithful")
        self.slide_pool = None
        if c.variant == "fixed":
            self.slide_pool = nn.Sequential(nn.Linear(c.d_model, c.slide_pool_dim), nn.Tanh(),
                                            nn.Linear(c.slide_pool_dim, 1))

    def _prototype_context(self, h: Tensor, layout: RegionLayout) -> Tensor:
        """Memory responses to evenly spaced real patches (in region order), attended by every patch."""
        b, n, d = h.shape
        order = layout.patch_index[layout.slot_mask]                  # flat b*n indices, slide by slide
        counts = torch.bincount(order // n, minlength=b).tolist()
        rows = []
        for real in torch.split(order, counts):
            pick = torch.linspace(0, max(len(real), 1) - 1, steps=self.config.prototype_num).long()  # on CPU, as upstream
            rows.append(h.reshape(b * n, d)[real[pick.to(h.device)]] if len(real) else
                        h.new_zeros(len(pick), d))
        resp = self.cmn(torch.stack(rows))                            # b k d
        return self.attn_mem(h, resp, resp)                           # b n d

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        b, n, _ = feats.shape
        keep = mask[..., None]
        h = self.att_embed(self.wsi_mapping(feats.masked_fill(~keep, 0.0)))   # b n d
        slots = self.config.region_size - 1
        layout = (spatial_layout(mask, coords, slots) if self.config.region_order == "spatial"
                  else scan_layout(mask, slots))
        h = h + self._prototype_context(h, layout)
        enc = self.encoder(h, layout)
        if self.slide_pool is not None:
            region_w = masked_softmax(self.slide_pool(enc.tokens).squeeze(-1), enc.token_mask)   # b r
        else:
            m = enc.token_mask.to(enc.tokens.dtype)
            region_w = m / m.sum(1, keepdim=True).clamp_min(1.0)                            # b r
        embedding = torch.einsum("br,brd->bd", region_w, enc.tokens)
        per_slot = enc.slot_weights * region_w[layout.region_batch, layout.region_pos][:, None]  # r l
        attention = per_slot.new_zeros(b * n)
        attention[layout.patch_index[layout.slot_mask]] = per_slot[layout.slot_mask]
        return AggregatorOutput(embedding=embedding, attention=attention.view(b, n),
                                tokens=enc.tokens, token_mask=enc.token_mask)
