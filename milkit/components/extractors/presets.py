"""Named presets of the pathology foundation-model ViTs, as data: one table, one factory.

Each row of :data:`PRESETS` holds a model's architecture numbers (as :class:`ViTConfig` defaults),
normalisation, input size, the key layout of the file its authors distribute (``timm``,
Hugging Face ``ViTModel`` = ``hf-vit``, Hugging Face ``Dinov2Model`` = ``hf-dinov2``) and its
:class:`~milkit.extractor.EncoderCard`. :func:`make_preset` turns a row into a registered
:class:`~milkit.extractor.Extractor` subclass (``[extractor] name = "uni"``, ``weights = "..."``)
built on the plain-torch ViT of :mod:`vit_core` (no timm, no transformers).

Sources of the numbers (cited per row in ``source``): the authors' model cards and the reference
loaders in mahmoodlab/TRIDENT ``trident/patch_encoder_models/load.py`` (timm kwargs, mean/std,
output pooling) and kaiko-ai/eva ``src/eva/vision/models/networks/backbones/pathology/*.py``.
The timm architecture defaults (``vit_giant_patch14_reg4_dinov2``, ``vit_huge_patch14_224``, ...)
are timm's ``vision_transformer.py`` model definitions. ``params`` in a card is the exact count of
the model these numbers build (checked on the meta device by the tests); ``published_params`` is
the rounded figure of the model card, None where this module's authors could not confirm it.
"""

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, create_model
from torch import Tensor

from milkit.components.extractors.vit import ViT, ViTConfig
from milkit.state_dict import load_checked, read_state_dict, sha256_file, strip_prefix
from milkit.errors import CheckpointError
from milkit.extractor import EncoderCard

Layout = Literal["timm", "hf-vit", "hf-dinov2"]

HOPTIMUS_MEAN, HOPTIMUS_STD = (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)
HIBOU_MEAN, HIBOU_STD = (0.7068, 0.5755, 0.722), (0.195, 0.2316, 0.1816)
KAIKO_MEAN, KAIKO_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
LUNIT_MEAN, LUNIT_STD = (0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464)

TRIDENT = "mahmoodlab/TRIDENT trident/patch_encoder_models/load.py"
EVA = "kaiko-ai/eva src/eva/vision/models/networks/backbones/pathology"
NC = "CC-BY-NC-ND 4.0 (non-commercial)"
KAIKO_LICENCE = "Kaiko Non-Commercial Public License v1 (non-commercial)"


@dataclass(frozen=True)
class Preset:
    name: str
    arch: dict[str, Any]
    """ViTConfig field values (img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, mlp, ...)."""
    layout: Layout
    card: EncoderCard
    source: str
    """Where the numbers come from."""
    published_params: float | None = None
    """The published (rounded) parameter count in millions; None where none was confirmed."""
    published_source: str = ""
    """Where ``published_params`` was read."""
    published_gap: str = ""
    """Why the built count does not round to ``published_params`` (then it must be within 1 %)."""
    input_px: int | None = None
    """Input side when it differs from the position-embedding grid's ``img_size``."""
    notes: tuple[str, ...] = field(default=())
    """What could not be confirmed."""

    def small_config(self) -> dict[str, Any]:
        """A reduced model with this preset's structure (registers, MLP kind, pooling, layout):
        width 24 (even packed-SwiGLU widths at every preset's mlp_ratio), 2 heads, 2 blocks, 32 px input
        at patch 8 (tests and the conformance kit)."""
        small: dict[str, Any] = {"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 2}
        if self.input_px is not None:
            small["input_px"] = 24                               # a different grid: position resampling
        return small


# timm architectures (timm/models/vision_transformer.py model definitions)
VIT_S = dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, layer_scale=False)
VIT_B = dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, layer_scale=False)
VIT_L = dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0, layer_scale=False)
VIT_H = dict(embed_dim=1280, depth=32, num_heads=16)                   # vit_huge_patch14_224
VIT_G_DINOV2 = dict(embed_dim=1536, depth=40, num_heads=24, mlp_ratio=2.66667 * 2, mlp="swiglu_packed",
                    layer_scale=True)                                    # vit_giant_patch14_dinov2
LS = dict(layer_scale=True)                                             # timm init_values=1e-5

PRESETS: tuple[Preset, ...] = (
    Preset(
        "uni", dict(img_size=224, patch_size=16, **{**VIT_L, **LS}), "timm",
        EncoderCard(
            model="UNI (Chen et al., Nat Med 2024): ViT-L/16, DINOv2, Mass-100K", params=303_350_784,
            output="class token (1024)", input_px=224, patch_px=16, mpp=0.5, licence=NC,
            weights="huggingface.co/MahmoodLab/UNI: pytorch_model.bin (timm vit_large_patch16_224)"),
        source=f"timm kwargs {TRIDENT} UNIInferenceEncoder; licence from the HF config.json",
        published_params=304, published_source="mahmoodlab/UNI README model table (via deepwiki.com/mahmoodlab/UNI)",
        published_gap="the card's timm vit_large_patch16_224 without a head is 303.35M; with timm's 1000-class "
                      "ImageNet head it is 304.38M, which the 304M figure rounds"),
    Preset(
        "uni2-h", dict(img_size=224, patch_size=14, embed_dim=1536, depth=24, num_heads=24, mlp_ratio=2.66667 * 2,
                       mlp="swiglu_packed", num_registers=8, no_embed_class=True, layer_scale=True), "timm",
        EncoderCard(
            model="UNI2-h (MahmoodLab 2025): ViT-H/14, SwiGLU, 8 registers, DINOv2", params=681_394_176,
            output="class token (1536)", input_px=224, patch_px=14, mpp=0.5, licence=NC,
            weights="huggingface.co/MahmoodLab/UNI2-h: pytorch_model.bin (timm)"),
        source=f"timm_kwargs of the model card, as in {TRIDENT} UNIv2InferenceEncoder", published_params=681,
        published_source="third-party READMEs quoting UNI2-h at 681M; timm built with TRIDENT's UNIv2 kwargs gives "
                         "exactly 681,394,176 (the mahmoodlab/UNI README names ViT-h/14-reg8 without a count)",
        notes=("no primary published count (the 632M of one README copy is Virchow's ViT-H)",)),
    Preset(
        "virchow", dict(img_size=224, patch_size=14, **VIT_H, mlp_ratio=5.3375, mlp="swiglu_packed",
                        layer_scale=True, pool="cls+avg"), "timm",
        EncoderCard(
            model="Virchow (Vorontsov et al., Nat Med 2024): ViT-H/14, SwiGLU, DINOv2", params=631_229_184,
            output="class token + mean patch token (2560)", input_px=224, patch_px=14, mpp=0.5,
            licence="Apache-2.0 (gated; research-use terms)",
            weights="huggingface.co/paige-ai/Virchow: pytorch_model.bin (timm vit_huge_patch14_224)"),
        source=f"timm kwargs and output of {TRIDENT} VirchowInferenceEncoder; licence from the HF README",
        published_params=632,
        published_source="arXiv:2408.00738 (Virchow2: same ViT-H/14 as Virchow, 632M); bio.rodeo/models/virchow",
        published_gap="not reconciled: the kwargs TRIDENT passes to timm build 631.2M (0.1 % below; timm's "
                      "1000-class head would add 1.28M, overshooting to 632.5M)"),
    Preset(
        "virchow2", dict(img_size=224, patch_size=14, **VIT_H, mlp_ratio=5.3375, mlp="swiglu_packed",
                         num_registers=4, layer_scale=True, pool="cls+avg"), "timm",
        EncoderCard(
            model="Virchow2 (Zimmermann et al., 2024): ViT-H/14, SwiGLU, 4 registers, DINOv2", params=631_239_424,
            output="class token + mean patch token (2560)", input_px=224, patch_px=14, mpp=0.5, licence=NC,
            weights="huggingface.co/paige-ai/Virchow2: pytorch_model.bin (timm vit_huge_patch14_224)"),
        source=f"timm kwargs (reg_tokens=4) and output (tokens 5:) of {TRIDENT} Virchow2InferenceEncoder",
        published_params=632,
        published_source="arXiv:2408.00738 abstract ('Virchow2, a 632 million parameter vision transformer')",
        published_gap="not reconciled: the kwargs TRIDENT passes to timm build 631.2M (0.1 % below; timm's "
                      "1000-class head would add 1.28M, overshooting to 632.5M)",
        notes=("licence (CC-BY-NC-ND 4.0) and mpp (trained at mixed 5x-40x) from memory",)),
    *(Preset(
        name, dict(img_size=224, patch_size=14, **VIT_G_DINOV2, num_registers=4, no_embed_class=True,
                   mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD), "timm",
        EncoderCard(
            model=f"{title} (Bioptimus): ViT-g/14, SwiGLU, 4 registers, DINOv2", params=1_134_774_272,
            output="class token (1536)", input_px=224, patch_px=14, mpp=0.5, licence=licence,
            weights=f"huggingface.co/bioptimus/{title}: pytorch_model.bin (timm vit_giant_patch14_reg4_dinov2)"),
        source=f"timm model, mean/std of {TRIDENT} HOptimus{title[-1]}InferenceEncoder", published_params=1100,
        published_source=psource, notes=notes) for name, title, licence, psource, notes in (
            ("h-optimus-0", "H-optimus-0", "Apache-2.0", "bio.rodeo/models/h-optimus-0 (1.1B, Apache-2.0)", ()),
            ("h-optimus-1", "H-optimus-1", "academic research only (non-commercial)",
             "Bioptimus H-Optimus-1 launch post (1.1B, academic research access)",
             ("exact licence name not read",)))),
    Preset(
        "h0-mini", dict(img_size=224, patch_size=14, **{**VIT_B, **LS, "mlp_ratio": 5.33334}, mlp="swiglu_packed",
                        num_registers=4,
                        no_embed_class=True, pool="cls+avg", mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD), "timm",
        EncoderCard(
            model="H0-mini (Bioptimus, Filiot et al. 2025): ViT-B/14 distilled from H-optimus-0, 4 registers",
            params=85_739_520, output="class token + mean patch token (1536)", input_px=224, patch_px=14, mpp=0.5,
            licence=NC,
            weights="huggingface.co/bioptimus/H0-mini: model.safetensors (timm vit_base_patch14_reg4_dinov2)"),
        source=f"timm model + SwiGLUPacked/SiLU of {TRIDENT} H0MiniInferenceEncoder (cls+mean per the model card)",
        published_params=86, published_source="third-party README (86M); DINOv2's SwiGLU width (mlp_ratio 5.33334) "
                                              "builds 85.74M, timm's default ratio 4 would build 71.57M",
        notes=("mlp_ratio 5.33334 (the DINOv2 SwiGLU width of its teacher H-optimus-0) inferred from the 86M count; "
               "its config.json was not read", "licence (CC-BY-NC-ND 4.0) from a third-party README",
               "output CLS (768) + mean patch tokens (768) as in code quoting the card's example; TRIDENT's default "
               "returns the class token alone")),
    Preset(
        "gigapath", dict(img_size=224, patch_size=16, **{**VIT_G_DINOV2, "mlp_ratio": 5.33334}), "timm",
        EncoderCard(
            model="Prov-GigaPath tile encoder (Xu et al., Nature 2024): ViT-g/16, SwiGLU, DINOv2",
            params=1_134_953_984, output="class token (1536)", input_px=224, patch_px=16, mpp=0.5,
            licence="Apache-2.0 (gated; research use)",
            weights="huggingface.co/prov-gigapath/prov-gigapath: pytorch_model.bin (timm vit_giant_patch14_dinov2, "
                    "patch_size=16)"),
        source=f"timm kwargs of {TRIDENT} GigaPathInferenceEncoder (patch_size 16, mlp_ratio 5.33334 over "
               "vit_giant_patch14_dinov2, which keeps SwiGLUPacked)", published_params=1130,
        published_source="bio.rodeo/models/prov-gigapath (tile encoder ~1.13B)",
        notes=("the brief says ViT-g/14; the distributed tile encoder uses patch 16", "licence from memory")),
    Preset(
        "phikon", dict(img_size=224, patch_size=16, **VIT_B, norm_eps=1e-6), "hf-vit",
        EncoderCard(
            model="Phikon (Filiot et al., 2023): iBOT ViT-B/16, TCGA", params=85_798_656,
            output="class token (768)", input_px=224, patch_px=16, mpp=0.5,
            licence="Owkin non-commercial licence (non-commercial)",
            weights="huggingface.co/owkin/phikon: pytorch_model.bin (transformers ViTModel)"),
        source=f"{TRIDENT} PhikonInferenceEncoder (ViTModel, last_hidden_state[:, 0]); layer_norm_eps 1e-6 from "
               "huggingface.co/owkin/phikon discussion #1 (merged: 'following iBOT official implementation')",
        published_params=85.8, published_source="huggingface.co/owkin/phikon model card ('Params (M): 85.8', no "
                                                "pooler); licence from the same card"),
    Preset(
        "phikon-v2", dict(img_size=224, patch_size=16, **{**VIT_L, **LS}, no_embed_class=True), "hf-dinov2",
        EncoderCard(
            model="Phikon-v2 (Filiot et al., 2024): DINOv2 ViT-L/16, PANCAN-XL", params=303_349_760,
            output="class token (1024)", input_px=224, patch_px=16, mpp=0.5,
            licence="Owkin non-commercial licence (non-commercial)",
            weights="huggingface.co/owkin/phikon-v2: model.safetensors (transformers Dinov2Model)"),
        source=f"{TRIDENT} Phikonv2InferenceEncoder (Dinov2Model, last_hidden_state[:, 0])",
        notes=("no primary published count: a secondary page (wsistream recipes) gives 307M, but the distributed "
               "model.safetensors (1.21 GB, fp32) holds ~303M parameters, as this architecture (303.35M)",
               "config from owkin/phikon-v2 config.json: Dinov2Model, 1024 wide, 24 layers, 16 heads, patch 16, "
               "224 px, mlp_ratio 4, GELU, layer_norm_eps 1e-6; licence from its LICENSE.pdf")),
    *(Preset(
        name, dict(img_size=224, patch_size=14, **{**size, **LS, "mlp_ratio": ratio}, mlp="swiglu_packed",
                   num_registers=4, no_embed_class=True, mean=HIBOU_MEAN, std=HIBOU_STD), "hf-dinov2",
        EncoderCard(
            model=f"{title} (HistAI, Nechaev et al. 2024): DINOv2 {vit}/14 with 4 registers", params=params,
            output=f"class token ({size['embed_dim']})", input_px=224, patch_px=14, mpp=0.5, licence="Apache-2.0",
            weights=f"huggingface.co/histai/{title}: model.safetensors (transformers Dinov2 with registers)"),
        source=f"mean/std {TRIDENT} constants.py HIBOU_*; huggingface.co/histai/hibou-b config.json "
               "(use_swiglu_ffn true, 4 registers, 224 px); HistAI/hibou hibou/models/__init__.py build_model "
               "(ffn_layer swiglufused, layerscale 1e-5); pooler_output = CLS",
        published_params=published, published_source=psource,
        notes=(f"{title}: SwiGLU hidden width {hidden} = DINOv2's SwiGLUFFNFused rounding of 2/3 x 4d to a multiple "
               "of 8" + ("" if name == "hibou-b" else "; hibou-L's own config.json not read (as hibou-B's)"),
               "the register key name embeddings.register_tokens of transformers' Dinov2WithRegisters assumed",
               "mpp not confirmed"))
      for name, title, vit, size, ratio, hidden, params, published, psource in (
          ("hibou-b", "hibou-B", "ViT-B", VIT_B, 4096 / 768, 2048, 85_739_520, 85.7,
           "bio.rodeo/models/hibou (85.7M)"),
          ("hibou-l", "hibou-L", "ViT-L", VIT_L, 5472 / 1024, 2736, 303_657_216, None, ""))),
    *(Preset(
        f"kaiko-vit-{tag}", dict(img_size=224, patch_size=patch, **size, mean=KAIKO_MEAN, std=KAIKO_STD), "timm",
        EncoderCard(
            model=f"kaiko.ai (Aben et al., 2024, arXiv:2404.15217): DINO {vit}/{patch}, TCGA", params=params,
            output=f"class token ({size['embed_dim']})", input_px=224, patch_px=patch, mpp=0.5,
            licence=KAIKO_LICENCE,
            weights=f"huggingface.co/1aurent/vit_{vit_name}_patch{patch}_224.kaiko_ai_towards_large_pathology_fms: "
                    "model.safetensors (timm)"),
        source=f"timm model names and mean/std of {TRIDENT} Kaiko*InferenceEncoder; {EVA}/kaiko.py; "
               "kaiko-ai/towards_large_pathology_fms hubconf.py builds these timm models",
        published_params=published, published_source=f"huggingface.co/timm/vit_{vit_name}_patch{patch}_224.dino card "
                                                       f"('Params (M): {published}'), the architecture kaiko builds",
        notes=("mpp not confirmed",))
      for tag, vit, vit_name, size, patch, params, published in (
          ("s8", "ViT-S", "small", VIT_S, 8, 21_670_272, 21.7), ("s16", "ViT-S", "small", VIT_S, 16, 21_665_664, 21.7),
          ("b8", "ViT-B", "base", VIT_B, 8, 85_807_872, 85.8), ("b16", "ViT-B", "base", VIT_B, 16, 85_798_656, 85.8))),
    Preset(
        "kaiko-vit-l14", dict(img_size=518, patch_size=14, **{**VIT_L, **LS}, num_registers=4, no_embed_class=True,
                              mean=KAIKO_MEAN, std=KAIKO_STD), "timm",
        EncoderCard(
            model="kaiko.ai (Aben et al., 2024, arXiv:2404.15217): DINOv2 ViT-L/14, 4 registers", params=304_370_688,
            output="class token (1024)", input_px=224, patch_px=14, mpp=0.5,
            licence=KAIKO_LICENCE,
            weights="huggingface.co/1aurent/vit_large_patch14_reg4_dinov2.kaiko_ai_towards_large_pathology_fms: "
                    "model.safetensors (timm, position grid 37 x 37)"),
        source=f"{TRIDENT} KaikoL14InferenceEncoder (vit_large_patch14_reg4_dinov2 built at 518 px, run at 224)",
        input_px=224,
        published_params=304.4, published_source="huggingface.co/timm/vit_large_patch14_reg4_dinov2.lvd142m card "
                                                 "('Params (M): 304.4', image size 518)",
        notes=("position embeddings are resampled 37 -> 16 with bicubic interpolation without antialias; timm "
               "resamples with antialias, so features differ slightly from timm's",
               "the 37 x 37 grid: kaiko's hubconf.py vitl14() builds vit_large_patch14_reg4_dinov2 at timm's 518 px "
               "and loads strictly, TRIDENT sets 518 too; a file with a 16 x 16 grid loads with img_size = 224")),
    Preset(
        "lunit-vit-s8", dict(img_size=224, patch_size=8, **VIT_S, mean=LUNIT_MEAN, std=LUNIT_STD), "timm",
        EncoderCard(
            model="Lunit DINO ViT-S/8 (Kang et al., CVPR 2023, benchmark-ssl-pathology)", params=21_670_272,
            output="class token (384)", input_px=224, patch_px=8, mpp=0.5,
            licence="Lunit public licence (research only, non-commercial)",
            weights="github.com/lunit-io/benchmark-ssl-pathology releases: dino_vit_small_patch8_ep200.torch (timm "
                    "vit_small_patch8_224 keys)"),
        source=f"{EVA}/lunit.py (timm vit_small_patch8_224, mean/std); {TRIDENT} LunitS8InferenceEncoder; "
               "licence from the lunit-io/benchmark-ssl-pathology README",
        published_params=21.7, published_source="huggingface.co/timm/vit_small_patch8_224.dino card ('Params (M): "
                                                "21.7'); the Lunit README builds that VisionTransformer",
        notes=("mpp not confirmed",)),
)


# ---- key layouts -------------------------------------------------------------------------------

HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
HF_VIT_BLOCK = {"layernorm_before.": "norm1.", "layernorm_after.": "norm2.", "attention.output.dense.": "attn.proj.",
                "intermediate.dense.": "mlp.fc1.", "output.dense.": "mlp.fc2."}
HF_DINOV2_BLOCK = {"norm1.": "norm1.", "norm2.": "norm2.", "attention.output.dense.": "attn.proj.",
                   "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.", "mlp.weights_in.": "mlp.fc1.",
                   "mlp.weights_out.": "mlp.fc2.", "layer_scale1.lambda1": "ls1.gamma",
                   "layer_scale2.lambda1": "ls2.gamma"}
HF_EMBED = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
            "embeddings.register_tokens": "reg_token", "embeddings.patch_embeddings.projection.weight":
            "patch_embed.proj.weight", "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
            "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}


def convert_hf(state: dict[str, Tensor], layout: Layout) -> dict[str, Tensor]:
    """Hugging Face ``ViTModel`` / ``Dinov2Model`` keys -> milkit's timm names, key by key.

    ``query``/``key``/``value`` are stacked into ``attn.qkv`` (shapes checked); ``pooler.*`` and
    ``embeddings.mask_token`` are dropped; a key that maps to nothing is kept under its own name, so
    the strict load reports it. For ``Dinov2Model`` the class-token position is folded into
    ``cls_token`` (DINOv2 gives registers no position; milkit's model then uses ``no_embed_class``).
    """
    state = strip_prefix(state, ("vit.", "dinov2.", "model."))
    block = HF_VIT_BLOCK if layout == "hf-vit" else HF_DINOV2_BLOCK
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key.startswith("pooler.") or key == "embeddings.mask_token":
            continue
        if key in HF_EMBED:
            out[HF_EMBED[key]] = value
            continue
        m = HF_LAYER.match(key)
        if m is None:
            out[key] = value
            continue
        i, rest = m.groups()
        attn = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
        if attn:
            qkv.setdefault(f"blocks.{i}.attn.qkv.{attn.group(2)}", {})[attn.group(1)] = value
            continue
        new = next((f"blocks.{i}.{dst}{rest[len(src):]}" for src, dst in block.items() if rest.startswith(src)), None)
        out[new or key] = value
    for key, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{key}: the file has only {sorted(parts)} of query/key/value")
        shapes = {tuple(p.shape) for p in parts.values()}
        if len(shapes) != 1:
            raise CheckpointError(f"{key}: query/key/value shapes differ: {sorted(shapes)}")
        out[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    if layout == "hf-dinov2" and "embeddings.position_embeddings" in state and "embeddings.cls_token" in state:
        pos = out["pos_embed"]
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    return out


def detect_layout(state: dict[str, Tensor]) -> str:
    """What a state dict looks like, for error messages."""
    keys = set(state)
    if any(".attention.attention.query." in k for k in keys):
        return "hf-dinov2" if any(".layer_scale1." in k or ".norm1." in k for k in keys) else "hf-vit"
    if any(k.endswith(".mlp.w12.weight") or k.startswith("backbone.") for k in keys):
        return "facebookresearch/dinov2"
    if any(".attn.qkv." in k for k in keys):
        return "timm"
    return "unknown"


def fitting_presets(state: dict[str, Tensor]) -> list[str]:
    """The presets whose full-size model the file fits key for key and shape for shape (built on the meta
    device, so nothing is allocated)."""
    fits, layout = [], detect_layout(state)
    for p, cls in zip(PRESETS, PRESET_CLASSES):
        if layout not in (p.layout, "unknown"):  # a timm file never "fits" an HF preset by accident
            continue
        try:
            converted = strip_prefix(state, ("module.", "model.", "backbone.", "trunk.")) if p.layout == "timm" else (
                convert_hf(state, p.layout))
        except CheckpointError:
            continue
        converted = {k: v for k, v in converted.items() if not k.startswith(("head.", "fc_norm.", "head_drop."))}
        with torch.device("meta"):
            model_state = cls(cls.Config()).model.state_dict()
        if set(model_state) == set(converted) and all(model_state[k].shape == converted[k].shape for k in converted):
            fits.append(p.name)
    return fits


def _layout_hint(preset: Preset, state: dict[str, Tensor], model_state: dict[str, Tensor]) -> str:
    found = detect_layout(state)
    hint = f" The file looks like a {found} checkpoint; preset '{preset.name}' expects {preset.layout}"
    hint += f" ({preset.card.weights})."
    fits = fitting_presets(state)
    if fits:
        return hint + f" It fits the full-size preset(s) {', '.join(map(repr, fits))}: wrong preset name?"
    if found not in (preset.layout, "unknown"):
        return hint + " Wrong file, or a different preset (its layout differs)?"
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    width = state.get("norm.weight")
    ours = model_state["norm.weight"].shape[0]
    if width is not None and width.shape[0] != ours:
        return hint + f" Its width is {width.shape[0]}, this preset's {ours}: another model's file or preset."
    return hint + (f" It has {depth} blocks." if depth else "") + " Wrong preset or wrong file?"


# ---- the factory -------------------------------------------------------------------------------


class PresetViT(ViT):
    """A named ViT preset: the generic ``vit`` with a model's numbers as defaults, its card and the
    key layout of its distributed file."""

    preset: ClassVar[Preset]
    Config: ClassVar[type[ViTConfig]]  # type: ignore[misc]

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config.model_copy(update={"weights": None}))
        self.config = config
        input_px = getattr(config, "input_px", None)
        self.tile_size_px = input_px or config.img_size
        if config.weights is not None:
            self._load(config)

    def _load(self, config: ViTConfig) -> None:
        p = self.preset
        raw = read_state_dict(config.weights)
        if p.layout == "timm":
            state = strip_prefix(raw, ("module.", "model.", "backbone.", "trunk."))
        else:
            state = convert_hf(raw, p.layout)
        try:
            load_checked(self.model, state, source=str(config.weights), ignore=("head.", "fc_norm.", "head_drop."))
        except CheckpointError as err:
            raise CheckpointError(str(err) + "." + _layout_hint(p, raw, self.model.state_dict())) from None
        self.weights_sha256 = sha256_file(config.weights)


def make_preset(p: Preset) -> type[PresetViT]:
    """One registered Extractor subclass for ``p``: ``name``, a Config with the preset's defaults, ``card``."""
    defaults: dict[str, Any] = {}
    for key, value in p.arch.items():
        info = ViTConfig.model_fields[key]
        defaults[key] = (info.annotation, Field(value, description=info.description))
    defaults["weights"] = (ViTConfig.model_fields["weights"].annotation, Field(
        None, description=f"Local file as distributed: {p.card.weights}; None = random init."))
    if p.input_px is not None:
        defaults["input_px"] = (int | None, Field(p.input_px, ge=8, description=(
            "Input side in pixels (tiles are resized to it); position embeddings are resampled from img_size.")))
    config = create_model(f"{_camel(p.name)}Config", __base__=ViTConfig, __module__=__name__, **defaults)
    config.__doc__ = f"{p.card.model}. Change the architecture numbers only for tests."
    doc = (f"{p.card.model}: {p.card.output}, {p.card.input_px} px, {p.layout} key layout. "
           f"Weights: {p.card.weights}. Licence: {p.card.licence}. Source: {p.source}.")
    cls = type(_camel(p.name), (PresetViT,), {"name": p.name, "Config": config, "card": p.card, "preset": p,
                                              "__doc__": doc, "__module__": __name__})
    return cls  # type: ignore[return-value]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name))


PRESET_CLASSES: tuple[type[PresetViT], ...] = tuple(make_preset(p) for p in PRESETS)
BY_NAME = {p.name: p for p in PRESETS}
