"""Official HistGen checkpoints -> ``MILModel(HistGen(variant='faithful'), Report)`` weights.

The upstream checkpoint (``model_best.pth``) is a dict whose ``state_dict`` holds
``wsi_mapping.*``, ``encoder_decoder.*`` and ``visual_extractor.*`` (the unused ResNet,
dropped). Positional-encoding buffers (``*.pe``) are dropped (milkit computes them), and
``encoder_decoder.model.cmn.*`` is the same module as ``encoder_decoder.cmn.*``.
"""

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from milkit.errors import CheckpointError
from milkit.weights_file import read_tensors

_PROJ = ("q_proj", "k_proj", "v_proj", "out_proj")
_ED = "encoder_decoder."
_ENC = "encoder_decoder.model.encoder."


def _attn(dst: str, src: str) -> dict[str, str]:
    return {f"{dst}.{n}.{p}": f"{src}.linears.{i}.{p}" for i, n in enumerate(_PROJ) for p in ("weight", "bias")}


def _ff(dst: str, src: str) -> dict[str, str]:
    return {f"{dst}.fc{i}.{p}": f"{src}.w_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}


def _norm(dst: str, src: str) -> dict[str, str]:
    return {f"{dst}.weight": f"{src}.a_2", f"{dst}.bias": f"{src}.b_2"}


def _layer(dst: str, src: str, cross: bool = False) -> dict[str, str]:
    m = {**_attn(f"{dst}.self_attn" if cross else f"{dst}.attn", f"{src}.self_attn"),
         **_ff(f"{dst}.ffn", f"{src}.feed_forward")}
    if cross:
        m.update(_attn(f"{dst}.cross_attn", f"{src}.src_attn"))
    for i in range(3 if cross else 2):
        m.update(_norm(f"{dst}.norm{i + 1}", f"{src}.sublayer.{i}.norm"))
    return m


def key_map(decoder_layers: int) -> dict[str, str]:
    """milkit key (``MILModel`` state dict) -> upstream key, for the faithful variant."""
    agg, enc = "aggregator.", "aggregator.encoder."
    m = {f"{agg}wsi_mapping.{p}": f"wsi_mapping.{p}" for p in ("weight", "bias")}
    m.update({f"{agg}att_embed.0.{p}": f"{_ED}att_embed.0.{p}" for p in ("weight", "bias")})
    for cmn in (f"{agg}cmn", "head.decoder.cmn"):                    # one module, two names
        m[f"{cmn}.memory"] = f"{_ED}memory_matrix"
        m.update(_attn(cmn, f"{_ED}cmn"))
    m.update(_attn(f"{agg}attn_mem", f"{_ED}attn_mem"))
    m[f"{enc}region_token"] = f"{_ENC}layer.0.global_token"
    m.update(_layer(f"{enc}region_layers.0", f"{_ENC}layer.0.region_encoder"))
    m.update(_layer(f"{enc}wsi_layer", f"{_ENC}layer.0.WSI_encoder"))
    m.update(_layer(f"{enc}region_layers.1", f"{_ENC}layer.1.region_encoder"))
    m.update(_norm(f"{enc}norm", f"{_ENC}norm"))
    m.update({f"{enc}pool_dense.{p}": f"{_ENC}pooler.dense.{p}" for p in ("weight", "bias")})
    m.update({f"{enc}pool_proj.{p}": f"{_ENC}pooler.attentive_pooling.lin_proj.{p}" for p in ("weight", "bias")})
    m[f"{enc}pool_score.weight"] = f"{_ENC}pooler.attentive_pooling.v.weight"
    for i in (0, 1):                                                  # never-used upstream modules
        m.update(_attn(f"{enc}unused.attn{i}", f"{_ENC}layer.{i}.attn"))
        m.update(_ff(f"{enc}unused.ff{i}", f"{_ENC}layer.{i}.ff"))
    m[f"{enc}unused.position_embeddings.weight"] = f"{_ENC}layer.0.position_embeddings.weight"
    m[f"{enc}unused_global_token1"] = f"{_ENC}layer.1.global_token"
    for i in range(decoder_layers):
        m.update(_layer(f"head.decoder.layers.{i}", f"{_ED}model.decoder.layers.{i}", cross=True))
    m.update(_norm("head.decoder.norm", f"{_ED}model.decoder.norm"))
    m["head.decoder.embed.weight"] = f"{_ED}model.tgt_embed.0.lut.weight"
    m.update({f"head.decoder.logit.{p}": f"{_ED}logit.{p}" for p in ("weight", "bias")})
    return m


def _dropped(key: str) -> bool:
    return key.startswith(("visual_extractor.", f"{_ED}model.cmn.")) or key.endswith(".pe")


def load_upstream_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a HistGen ``.pth`` (``{'state_dict': ...}`` or a bare state dict) without unpickling code.

    Raises:
        CheckpointError: the file is missing, is not a weights file (the message says what it is),
            needs Python globals outside the weights-only allow-list (listed), or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    obj = read_tensors(path)  # safetensors, or torch.load(weights_only=True) with numpy scalars and Namespace
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is not a HistGen checkpoint: expected a dict with a 'state_dict' of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _shape(sd: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"checkpoint has no '{key}': not a HistGen (model_name = histgen) state dict")
    return tuple(sd[key].shape)


def infer_sizes(sd: Mapping[str, Tensor]) -> dict[str, int]:
    """Sizes readable from the weights: in_dim, d_vf, d_model, d_ff, cmm_size, outputs (V+1), layers, region_size."""
    d_vf, in_dim = _shape(sd, "wsi_mapping.weight")
    slots, cmm_dim = _shape(sd, f"{_ED}memory_matrix")
    rows = _shape(sd, f"{_ENC}layer.0.position_embeddings.weight")[0] - 1   # = ceil(100000 / S)
    sizes = [s for s in range(2, 100_001) if math.ceil(100_000 / s) == rows]
    layers = {int(m.group(1)) for k in sd if (m := re.match(rf"{_ED}model\.decoder\.layers\.(\d+)\.", k))}
    return {"in_dim": in_dim, "d_vf": d_vf, "d_model": _shape(sd, f"{_ED}att_embed.0.weight")[0],
            "d_ff": _shape(sd, f"{_ENC}layer.0.region_encoder.feed_forward.w_1.weight")[0],
            "cmm_size": slots, "cmm_dim": cmm_dim, "outputs": _shape(sd, f"{_ED}logit.weight")[0],
            "num_layers": len(layers), "region_size": sizes[0] if len(sizes) == 1 else 96}


def convert_state_dict(upstream: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map ``upstream`` onto the keys and shapes of ``expected`` (a faithful MILModel's state dict).

    Raises:
        CheckpointError: listing every missing, unexpected or mis-shaped key.
    """
    layers = len({k.split(".")[3] for k in expected if k.startswith("head.decoder.layers.")})
    mapping = key_map(layers)
    problems, out = [], {}
    for key, ref in expected.items():
        src = mapping.get(key)
        if src is None:
            problems.append(f"milkit key '{key}' has no HistGen counterpart (is the aggregator variant 'faithful'?)")
        elif src not in upstream:
            problems.append(f"missing key '{src}' (needed for '{key}')")
        elif upstream[src].numel() != ref.numel() or (upstream[src].dim() == ref.dim() and upstream[src].shape != ref.shape):
            problems.append(f"'{src}' has shape {tuple(upstream[src].shape)}, the model expects {tuple(ref.shape)} ('{key}')")
        else:
            out[key] = upstream[src].detach().reshape(ref.shape).to(ref.dtype)
    used = set(mapping.values())
    extra = sorted(k for k in upstream if k not in used and not _dropped(k))
    problems += [f"unexpected key '{k}' (not part of HistGen's model)" for k in extra[:10]]
    for k in upstream:                                               # the shared CMN must really be shared
        twin = k.replace(f"{_ED}model.cmn.", f"{_ED}cmn.", 1)
        if k.startswith(f"{_ED}model.cmn.") and twin in upstream and not torch.equal(upstream[k], upstream[twin]):
            problems.append(f"'{k}' differs from '{twin}' (HistGen shares one memory module)")
    if problems:
        raise CheckpointError("the checkpoint does not fit HistGen (faithful):\n  " + "\n  ".join(problems))
    return out

