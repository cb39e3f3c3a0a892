"""Minimal port of PRISM's slide encoder (``Prism.image_resampler``), for parity and key-layout tests only.

Ported from the remote code of huggingface.co/paige-ai/Prism (Shaikovski et al., 2024), as vendored in
DIAGNijmegen's UNICORN baseline: ``unicorn_baseline/vision_language/prism/perceiver.py`` (CrossAttention,
MHSA, GEGLU, FeedForward, Perceiver, PerceiverResampler), ``configuring_prism.py`` (PerceiverConfig
defaults) and ``modeling_prism.py`` (``Prism.image_resampler``, ``slide_representations``).

Changes from upstream, none affecting the numbers on CPU: the ``environs``/xformers memory-efficient
branch and the eval-only ``return_attn`` branch are dropped, and the ``torch.backends.cuda.sdp_kernel``
context (math kernel only) is left out (CPU runs the math kernel anyway). ``PerceiverConfig`` is a
SimpleNamespace. ``Prism`` holds only ``image_resampler`` (no BioGPT decoder, no contrastive heads).
"""

from types import SimpleNamespace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def PerceiverConfig(latent_seq=512, latent_dim=1280, context_dim=2560, mhsa_heads=8, perceiver_depth=8,
                    transformer_depth=6, share_xattn_start_layer=1, share_tf_start_layer=0, xattn_heads=1,
                    mlp_mult=1, mlp_activation='geglu'):
    return SimpleNamespace(**locals())


class CrossAttention(nn.Module):
    def __init__(self, *, query_dim, context_dim, head_dim, heads, return_attn=False, c_norm=True):
        super().__init__()
        self.query_dim = query_dim
        self.context_dim = context_dim
        self.head_dim = head_dim
        self.heads = heads
        self.scale = self.head_dim**-0.5
        self.inner_dim = self.head_dim * self.heads
        self.return_attn = return_attn
        self.x_norm = nn.LayerNorm(self.query_dim)
        self.c_norm = nn.LayerNorm(self.context_dim) if c_norm is True else None
        self.to_q = nn.Linear(self.query_dim, self.inner_dim, bias=False)
        self.to_kv = nn.Linear(self.context_dim, self.inner_dim * 2, bias=False)
        self.to_out = nn.Linear(self.inner_dim, self.query_dim, bias=False)

    def forward(self, x, c=None, kvt=None, attn_mask=None):
        Bx, Nx, Dimx = x.shape
        x = self.x_norm(x)
        c = self.c_norm(c) if self.c_norm is not None else c
        q = self.to_q(x)
        q = q.reshape(Bx, Nx, self.heads, self.head_dim)
        if c is not None and kvt is None:
            Bc, Nc, _ = c.shape
            kv = self.to_kv(c)
            kv = kv.reshape(Bc, Nc, 2, self.heads, self.head_dim)
            k, v = kv.unbind(2)
            kvt = (k, v)
        elif kvt is not None and c is None:
            k, v = kvt
            Bc, Nc, _, _ = k.shape
            assert (Bc, Nc) == (v.shape[0], v.shape[1])
        else:
            raise Exception(f"XOR(c, kvt) but got: {type(c)} and {type(kvt)}.")
        if attn_mask is not None:
            attn_mask = attn_mask.reshape(Bc, 1, Nx, Nc).expand(-1, self.heads, -1, -1)
        q = q.permute(0, 2, 1, 3)
        k = k.permute(0, 2, 1, 3)
        v = v.permute(0, 2, 1, 3)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        attn = torch.empty(0)
        a = a.transpose(1, 2)
        c = a.reshape(Bx, Nx, self.inner_dim)
        o = self.to_out(c)
        return o, kvt, attn


class MHSA(nn.Module):
    def __init__(self, *, dim, num_heads):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mha = nn.MultiheadAttention(embed_dim=dim, num_heads=num_heads, dropout=0.0, bias=False,
                                         add_bias_kv=False, add_zero_attn=False, kdim=dim, vdim=dim, batch_first=True)

    def forward(self, x):
        x = self.norm(x)
        x, _ = self.mha(x, x, x, key_padding_mask=None, need_weights=False, attn_mask=None,
                        average_attn_weights=False, is_causal=False)
        return x


class GEGLU(nn.Module):
    def forward(self, x):
        x, gates = x.chunk(2, dim=-1)
        return x * F.gelu(gates)


class FeedForward(nn.Module):
    def __init__(self, *, dim, mult=1, dropout=0.0, activation="geglu"):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        extra_dim = 1
        if activation == "geglu":
            actfn = GEGLU
            extra_dim = 2
        elif activation == "gelu":
            actfn = nn.GELU
        else:
            raise Exception(f"{activation=} not supported.")
        self.net = nn.Sequential(nn.Linear(dim, dim * mult * extra_dim), actfn(), nn.Linear(dim * mult, dim),
                                 nn.Dropout(dropout))

    def forward(self, x):
        return self.net(self.norm(x))


class Perceiver(nn.Module):
    def __init__(self, *, latent_seq=512, latent_dim=768, context_dim=2560, mhsa_heads=8, perceiver_depth=8,
                 transformer_depth=6, share_xattn_start_layer=1, share_tf_start_layer=0, xattn_heads=1, mlp_mult=1,
                 mlp_activation="geglu"):
        super().__init__()
        assert perceiver_depth > 0
        assert share_xattn_start_layer >= 0
        assert share_tf_start_layer >= 0
        self.share_xattn_start_layer = share_xattn_start_layer
        self.share_tf_start_layer = share_tf_start_layer
        self.latent_seq = latent_seq
        self.mhsa_heads = mhsa_heads
        latent_weights = torch.randn(latent_seq, latent_dim)
        self.latents = nn.Parameter(latent_weights)

        get_xattn = lambda: nn.ModuleDict({  # noqa: E731
            "xattn": CrossAttention(query_dim=latent_dim, context_dim=context_dim, head_dim=latent_dim // xattn_heads,
                                    heads=xattn_heads, return_attn=False, c_norm=False),
            "ff": FeedForward(dim=latent_dim, mult=mlp_mult, activation=mlp_activation)})
        get_mhsa = lambda: nn.ModuleDict({  # noqa: E731
            "mhsa": MHSA(dim=latent_dim, num_heads=mhsa_heads),
            "ff": FeedForward(dim=latent_dim, mult=mlp_mult, activation=mlp_activation)})
        get_transformer = lambda: nn.ModuleList([get_mhsa() for _ in range(transformer_depth)])  # noqa: E731

        layers = []
        for i in range(perceiver_depth):
            layer = nn.ModuleDict({
                "xattn": (get_xattn() if i <= self.share_xattn_start_layer else layers[-1]["xattn"]),
                "tf": (get_transformer() if i <= self.share_tf_start_layer else layers[-1]["tf"]),
            })
            layers.append(layer)
        self.layers = nn.ModuleList(layers)

    def forward(self, context: Tensor, attn_mask: Tensor) -> Tensor:
        B, N, _ = context.shape
        assert len(attn_mask.shape) == 2
        assert attn_mask.shape[:1] == context.shape[:1]
        attn_mask = attn_mask.reshape(B, 1, N).expand(-1, self.latent_seq, -1)
        x = self.latents.unsqueeze(0).expand(B, -1, -1)
        kvt = None
        for i, l in enumerate(self.layers):
            xattn = l["xattn"]
            if i <= self.share_xattn_start_layer:
                xattn_out, kvt, _ = xattn["xattn"](x, c=context, kvt=None, attn_mask=attn_mask)
            else:
                xattn_out, kvt, _ = xattn["xattn"](x, c=None, kvt=kvt, attn_mask=attn_mask)
            x = xattn_out + x
            x = xattn["ff"](x) + x
            tf = l["tf"]
            for mhsa in tf:
                x = mhsa["mhsa"](x) + x
                x = mhsa["ff"](x) + x
        return x


class PerceiverResampler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.query_dim = config.latent_dim
        self.query_seq = config.latent_seq
        latent_seq = 1 + config.latent_seq  # +1 for image embedding latent query
        self.cls_norm = nn.LayerNorm(config.latent_dim)
        self.img_norm = nn.LayerNorm(config.latent_dim)
        self.perceiver = Perceiver(
            latent_seq=latent_seq, latent_dim=config.latent_dim, context_dim=config.context_dim,
            mhsa_heads=config.mhsa_heads, perceiver_depth=config.perceiver_depth,
            transformer_depth=config.transformer_depth, share_xattn_start_layer=config.share_xattn_start_layer,
            share_tf_start_layer=config.share_tf_start_layer, xattn_heads=config.xattn_heads,
            mlp_mult=config.mlp_mult, mlp_activation=config.mlp_activation)

    def forward(self, tile_embeddings: Tensor, tile_mask: Optional[Tensor] = None) -> dict[str, Tensor]:
        batch_size = len(tile_embeddings)
        device = tile_embeddings.device
        if tile_mask is None:
            if batch_size > 1:
                raise Exception("tile pad mask must be provided with batch size>1.")
            tile_mask = torch.ones(tile_embeddings.shape[:2], device=device, dtype=tile_embeddings.dtype)
        x = self.perceiver(context=tile_embeddings, attn_mask=tile_mask)
        cls_emb, img_emb = x[:, 0], x[:, 1:]
        assert cls_emb.shape == (len(tile_embeddings), self.query_dim)
        assert img_emb.shape == (len(tile_embeddings), self.query_seq, self.query_dim)
        cls_emb = self.cls_norm(cls_emb)
        img_emb = self.img_norm(img_emb)
        return {"image_embedding": cls_emb, "image_latents": img_emb}


class Prism(nn.Module):
    """``modeling_prism.Prism`` reduced to its slide encoder: ``slide_representations``."""

    def __init__(self, perceiver_config):
        super().__init__()
        self.image_resampler = PerceiverResampler(perceiver_config)

    def slide_representations(self, tile_embeddings, tile_mask=None):
        return self.image_resampler(tile_embeddings, tile_mask=tile_mask)
