"""PRISM's slide encoder: a weight-shared Perceiver over Virchow tiles (Shaikovski et al., 2024, arXiv:2405.10254).

Reference code: huggingface.co/paige-ai/Prism's remote code, as vendored in the UNICORN baseline
(``unicorn_baseline/vision_language/prism/``): ``perceiver.py``, ``configuring_prism.py`` (PerceiverConfig: the
defaults) and ``modeling_prism.py`` (``image_resampler``, ``slide_representations``). Not the Flamingo resampler of
``perceiver``. Differences: docs/aggregators.md.
"""

import re

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput, FeatureSpec
from milkit.components.aggregators.slide_encoder import SlideEncoder, SlideEncoderConfig
from milkit.errors import CheckpointError
from milkit.nn.geglu import GEGLUFeedForward

NOT_SLIDE_ENCODER = ("text_decoder.", "img_to_latents.", "text_to_latents.", "temperature")
"""Keys of the Prism file outside ``image_resampler``: the BioGPT decoder and the contrastive heads (dropped)."""
LAYER = re.compile(r"perceiver\.layers\.(\d+)\.(xattn|tf)\.(.+)")


class PRISMConfig(SlideEncoderConfig):
    latent_seq: int = Field(512, gt=0, description="Image latents (= tokens); one more latent gives the embedding.")
    latent_dim: int = Field(1280, gt=0, description="Width of the latents = of the embedding and the tokens.")
    perceiver_depth: int = Field(8, gt=0, description="Layers: cross-attention + feed-forward + a transformer.")
    transformer_depth: int = Field(6, ge=0, description="Self-attention blocks per perceiver layer.")
    share_xattn_start_layer: int = Field(1, ge=0, description="Later layers reuse this one's cross-attention block.")
    share_tf_start_layer: int = Field(0, ge=0, description="Later layers reuse this one's transformer.")
    xattn_heads: int = Field(1, gt=0, description="Cross-attention heads.")
    mhsa_heads: int = Field(8, gt=0, description="Self-attention heads.")
    mlp_mult: int = Field(1, gt=0, description="Feed-forward hidden width = mlp_mult * latent_dim.")

    @model_validator(mode="after")
    def _check(self) -> "PRISMConfig":
        if self.latent_dim % self.xattn_heads or self.latent_dim % self.mhsa_heads:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by xattn_heads and mhsa_heads")
        return self


class CrossAttention(nn.Module):
    """Latents (layer-normed) attend to the raw tiles; no bias, no context norm (c_norm=False upstream)."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.x_norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, dim * 2, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def kv(self, context: Tensor) -> Tensor:
        return rearrange(self.to_kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)  # 2 b h n d

    def forward(self, x: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
        q = rearrange(self.to_q(self.x_norm(x)), "b l (h d) -> b h l d", h=self.heads)  # b h l d
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)        # b h l d
        return self.to_out(rearrange(out, "b h l d -> b l (h d)"))


class MHSA(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mha = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        return self.mha(x, x, x, need_weights=False)[0]


class PRISM(SlideEncoder):
    """PRISM's slide encoder (Shaikovski et al., 2024): Perceiver with 1 + 512 learned latents over Virchow tiles.

    Each of ``perceiver_depth`` layers: the latents cross-attend to the real tiles, a GEGLU feed-forward,
    then ``transformer_depth`` self-attention + feed-forward blocks (all residual). Layers after
    ``share_xattn_start_layer`` reuse its cross-attention block (and keys/values), layers after
    ``share_tf_start_layer`` its transformer. Latent 0, layer-normed, is ``embedding`` [B, 1280]
    (``image_embedding``); the other 512 are ``tokens`` (``image_latents``, what PRISM's BioGPT reads).
    No per-patch ``attention``.
    """

    name = "prism"
    Config = PRISMConfig
    returns_attention = False
    provides_tokens = True
    expected_features = FeatureSpec(encoders=("virchow",), dim=2560)

    def __init__(self, config: PRISMConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        d, depth = config.latent_dim, config.perceiver_depth
        self.out_dim = d
        self.share = {"xattn": min(config.share_xattn_start_layer, depth - 1),
                      "tf": min(config.share_tf_start_layer, depth - 1)}
        mult, tf_depth = config.mlp_mult, config.transformer_depth
        self.latents = nn.Parameter(torch.randn(1 + config.latent_seq, d))
        self.xattn = nn.ModuleList(
            nn.ModuleDict({"xattn": CrossAttention(d, in_dim, config.xattn_heads), "ff": GEGLUFeedForward(d, mult)})
            for _ in range(self.share["xattn"] + 1))
        self.tf = nn.ModuleList(
            nn.ModuleList(nn.ModuleDict({"mhsa": MHSA(d, config.mhsa_heads), "ff": GEGLUFeedForward(d, mult)})
                          for _ in range(tf_depth))
            for _ in range(self.share["tf"] + 1))
        self.cls_norm, self.img_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.load_published(self, convert=self.convert, expects="model.safetensors of huggingface.co/paige-ai/Prism "
                            "(its image_resampler.* keys; the text decoder is dropped)")

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        mask = mask | ~mask.any(1, keepdim=True)            # an empty bag attends to its padding, not to nothing
        x = self.latents.expand(feats.shape[0], -1, -1)      # b 1+l d
        kv = feats.new_empty(0)
        for i in range(self.config.perceiver_depth):
            cross = self.xattn[min(i, self.share["xattn"])]
            if i <= self.share["xattn"]:                     # later layers reuse its keys/values (the reference's kvt)
                kv = cross["xattn"].kv(feats)                # 2 b h n d
            x = cross["xattn"](x, kv, mask[:, None, None]) + x
            x = cross["ff"](x) + x
            for block in self.tf[min(i, self.share["tf"])]:
                x = block["mhsa"](x) + x
                x = block["ff"](x) + x
        tokens = self.img_norm(x[:, 1:])                     # b l d: image_latents
        token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return AggregatorOutput(embedding=self.cls_norm(x[:, 0]), tokens=tokens, token_mask=token_mask)

    def convert(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Prism file keys -> this module's: ``image_resampler.perceiver.layers.{i}.xattn.*`` -> ``xattn.{min(i, s)}.*``
        (``tf`` alike): a shared block is loaded once, from whichever of its aliases the file holds."""
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith(NOT_SLIDE_ENCODER):
                continue
            name = key.removeprefix("image_resampler.")
            if m := LAYER.fullmatch(name):                   # layers.{i}.{xattn|tf}.rest
                name = f"{m[2]}.{min(int(m[1]), self.share[m[2]])}.{m[3]}"
            name = name.removeprefix("perceiver.")
            if name in out and not _same(out[name], value):
                raise CheckpointError(f"{key} differs from the block it shares weights with ({name}); the file was "
                                      "made with other share_xattn_start_layer / share_tf_start_layer")
            out[name] = value
        return out


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and (a.is_meta or a.data_ptr() == b.data_ptr() or torch.equal(a, b))
