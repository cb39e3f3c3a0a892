"""Named ViT presets: full-size parameter counts on the meta device, distributed key layouts (timm, HF
ViTModel, HF Dinov2Model) loading exactly, wrong-file messages, registration, and a real slide."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from milkit.components.extractors.presets import BY_NAME, PRESET_CLASSES, PRESETS, Preset, convert_hf
from milkit.errors import CheckpointError

CLASSES = {c.name: c for c in PRESET_CLASSES}
NAMES = [p.name for p in PRESETS]
SMALL_WIDTH = 24            # int(24 * ratio) is even for every preset's mlp_ratio (packed SwiGLU halves)


def small_cfg(p: Preset, **extra):
    return CLASSES[p.name].Config(**{**p.small_config(), "embed_dim": SMALL_WIDTH, **extra})


def card_width(p: Preset) -> int:
    return int(re.search(r"\((\d+)\)", p.card.output).group(1))


def significant_round(value: float, like: float) -> float:
    """``value`` rounded to the significant digits ``like`` is written with (85.8 -> 3, 1100 -> 2)."""
    digits = len(f"{like:g}".replace(".", "").strip("0"))
    return float(f"{value:.{digits}g}")


@pytest.mark.parametrize("name", NAMES)
def test_full_size_on_meta_matches_the_card(name: str) -> None:
    p, cls = BY_NAME[name], CLASSES[name]
    with torch.device("meta"):
        model = cls(cls.Config())
    count = sum(t.numel() for t in model.model.parameters())
    assert count == p.card.params
    assert model.feature_dim == card_width(p) and model.tile_size_px == p.card.input_px
    assert model.model.arch.patch_size == p.card.patch_px
    if p.published_params is not None:                     # the published figure, at its precision (or within 1%)
        millions = count / 1e6
        if p.published_gap:                                # explained: within 1 %
            assert abs(millions - p.published_params) <= 0.01 * p.published_params, (millions, p.published_gap)
        else:
            assert significant_round(millions, p.published_params) == p.published_params, (millions, p.published_source)
        assert p.published_source


# ---- distributed layouts ------------------------------------------------------------------------


def to_hf(state: dict[str, torch.Tensor], layout: str, depth: int, swiglu: bool = False) -> dict[str, torch.Tensor]:
    """milkit/timm names -> the Hugging Face ViTModel / Dinov2Model names (the inverse of convert_hf);
    ``swiglu``: Dinov2SwiGLUFFN's ``mlp.weights_in`` / ``mlp.weights_out`` (use_swiglu_ffn = true)."""
    out: dict[str, torch.Tensor] = {}
    cls, pos = state["cls_token"], state["pos_embed"]
    if layout == "hf-dinov2":                              # the class position is 0 here, so folding is exact
        pos = torch.cat([torch.zeros_like(cls), pos], 1)
        out["embeddings.mask_token"] = torch.zeros(1, cls.shape[-1])
    out.update({"embeddings.cls_token": cls, "embeddings.position_embeddings": pos,
                "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
                "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
                "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]})
    if "reg_token" in state:
        out["embeddings.register_tokens"] = state["reg_token"]
    for i in range(depth):
        s, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[s + f"attn.qkv.{kind}"].chunk(3, 0)
            out |= {h + f"attention.attention.query.{kind}": q, h + f"attention.attention.key.{kind}": k,
                    h + f"attention.attention.value.{kind}": v,
                    h + f"attention.output.dense.{kind}": state[s + f"attn.proj.{kind}"]}
            if layout == "hf-vit":
                out |= {h + f"layernorm_before.{kind}": state[s + f"norm1.{kind}"],
                        h + f"layernorm_after.{kind}": state[s + f"norm2.{kind}"],
                        h + f"intermediate.dense.{kind}": state[s + f"mlp.fc1.{kind}"],
                        h + f"output.dense.{kind}": state[s + f"mlp.fc2.{kind}"]}
            else:
                out |= {h + f"norm1.{kind}": state[s + f"norm1.{kind}"],
                        h + f"norm2.{kind}": state[s + f"norm2.{kind}"],
                        h + ("mlp.weights_in." if swiglu else "mlp.fc1.") + kind: state[s + f"mlp.fc1.{kind}"],
                        h + ("mlp.weights_out." if swiglu else "mlp.fc2.") + kind: state[s + f"mlp.fc2.{kind}"]}
        if layout == "hf-dinov2":
            out[h + "layer_scale1.lambda1"] = state[s + "ls1.gamma"]
            out[h + "layer_scale2.lambda1"] = state[s + "ls2.gamma"]
    if layout == "hf-vit":
        out["pooler.dense.weight"], out["pooler.dense.bias"] = torch.eye(cls.shape[-1]), torch.zeros(cls.shape[-1])
    return out


def random_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) * 0.2 for k, v in model.state_dict().items()}


def distributed_file(p: Preset, cfg, tmp_path: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random model's weights written as its authors distribute them (timm .bin, HF safetensors)."""
    state = random_state(CLASSES[p.name](cfg).model, seed)
    if p.layout == "timm":
        path = tmp_path / "pytorch_model.bin"
        torch.save({**state, "head.weight": torch.zeros(3, cfg.embed_dim)}, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file(to_hf(state, p.layout, cfg.depth, swiglu=p.arch.get("mlp") == "swiglu_packed"), str(path))
    return path, state


@pytest.mark.parametrize("name", NAMES)
def test_distributed_layout_loads_and_reproduces_the_model_exactly(name: str, tmp_path: Path) -> None:
    p, cls = BY_NAME[name], CLASSES[name]
    cfg = small_cfg(p)
    path, state = distributed_file(p, cfg, tmp_path)
    original = cls(cfg).eval()
    original.model.load_state_dict(state)
    loaded = cls(cfg.model_copy(update={"weights": path})).eval()
    arch = loaded.model.arch                                 # the preset's structure survives the reduction
    assert (arch.num_registers, arch.mlp, arch.pool, arch.no_embed_class) == (
        p.arch.get("num_registers", 0), p.arch.get("mlp", "gelu"), p.arch.get("pool", "cls"),
        p.arch.get("no_embed_class", False))
    x = torch.rand(2, 3, loaded.tile_size_px, loaded.tile_size_px)
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    assert loaded.feature_dim == SMALL_WIDTH * (2 if arch.pool == "cls+avg" else 1)
    assert len(loaded.weights_sha256) == 64 and loaded.mean == tuple(p.arch.get("mean", loaded.mean))


def hf_reference(hf: dict[str, torch.Tensor], layout: str, cfg, x: torch.Tensor) -> torch.Tensor:
    """transformers' ViTModel / Dinov2Model forward (CLS of last_hidden_state), written on the HF keys."""
    d, heads, eps = cfg.embed_dim, cfg.num_heads, cfg.norm_eps
    x = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    t = F.conv2d(x, hf["embeddings.patch_embeddings.projection.weight"],
                 hf["embeddings.patch_embeddings.projection.bias"], stride=cfg.patch_size).flatten(2).transpose(1, 2)
    b = t.shape[0]
    t = torch.cat([hf["embeddings.cls_token"].expand(b, -1, -1), t], 1) + hf["embeddings.position_embeddings"]
    if "embeddings.register_tokens" in hf:                   # Dinov2WithRegisters: after CLS, no position
        t = torch.cat([t[:, :1], hf["embeddings.register_tokens"].expand(b, -1, -1), t[:, 1:]], 1)
    n1, n2 = ("layernorm_before", "layernorm_after") if layout == "hf-vit" else ("norm1", "norm2")
    for i in range(cfg.depth):
        h = f"encoder.layer.{i}."
        y = F.layer_norm(t, (d,), hf[h + f"{n1}.weight"], hf[h + f"{n1}.bias"], eps=eps)
        q, k, v = (F.linear(y, hf[h + f"attention.attention.{n}.weight"], hf[h + f"attention.attention.{n}.bias"])
                   .reshape(b, -1, heads, d // heads).transpose(1, 2) for n in ("query", "key", "value"))
        a = (torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, -1) @ v).transpose(1, 2).reshape(b, -1, d)
        a = F.linear(a, hf[h + "attention.output.dense.weight"], hf[h + "attention.output.dense.bias"])
        t = t + (a * hf[h + "layer_scale1.lambda1"] if layout == "hf-dinov2" else a)
        y = F.layer_norm(t, (d,), hf[h + f"{n2}.weight"], hf[h + f"{n2}.bias"], eps=eps)
        if h + "mlp.weights_in.weight" in hf:               # Dinov2SwiGLUFFN: silu(x1) * x2 of one packed projection
            x1, x2 = F.linear(y, hf[h + "mlp.weights_in.weight"], hf[h + "mlp.weights_in.bias"]).chunk(2, -1)
            m = F.linear(F.silu(x1) * x2, hf[h + "mlp.weights_out.weight"], hf[h + "mlp.weights_out.bias"])
        else:
            fc1, fc2 = ("intermediate.dense", "output.dense") if layout == "hf-vit" else ("mlp.fc1", "mlp.fc2")
            m = F.linear(F.gelu(F.linear(y, hf[h + f"{fc1}.weight"], hf[h + f"{fc1}.bias"])),
                         hf[h + f"{fc2}.weight"], hf[h + f"{fc2}.bias"])
        t = t + (m * hf[h + "layer_scale2.lambda1"] if layout == "hf-dinov2" else m)
    return F.layer_norm(t, (d,), hf["layernorm.weight"], hf["layernorm.bias"], eps=eps)[:, 0]


@pytest.mark.parametrize("name", ["phikon", "phikon-v2", "hibou-b", "hibou-l"])
def test_hf_layouts_match_the_transformers_forward(name: str, tmp_path: Path) -> None:
    p = BY_NAME[name]
    cfg = small_cfg(p)
    state = random_state(CLASSES[name](cfg).model, seed=3)
    hf = to_hf(state, p.layout, cfg.depth, swiglu=p.arch.get("mlp") == "swiglu_packed")
    torch.manual_seed(4)
    hf["embeddings.position_embeddings"] = torch.randn_like(hf["embeddings.position_embeddings"]) * 0.2  # cls pos too
    save_file(hf, str(tmp_path / "model.safetensors"))
    model = CLASSES[name](cfg.model_copy(update={"weights": tmp_path / "model.safetensors"})).eval()
    x = torch.rand(2, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf_reference(hf, p.layout, cfg, x), atol=1e-5, rtol=1e-4)


def test_convert_hf_checks_query_key_value() -> None:
    w = torch.zeros(4, 4)
    with pytest.raises(CheckpointError, match="only .*query"):
        convert_hf({"encoder.layer.0.attention.attention.query.weight": w}, "hf-vit")
    with pytest.raises(CheckpointError, match="shapes differ"):
        convert_hf({f"encoder.layer.0.attention.attention.{n}.weight": torch.zeros(4, s)
                    for n, s in (("query", 4), ("key", 4), ("value", 3))}, "hf-vit")


def test_a_file_of_another_layout_names_keys_and_the_likely_cause(tmp_path: Path) -> None:
    phikon = BY_NAME["phikon"]
    path, _ = distributed_file(phikon, small_cfg(phikon), tmp_path)        # HF ViTModel file given to UNI
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.0\.attn\.proj\.bias.*unexpected keys: "
                       r"embeddings\.cls_token.*looks like a hf-vit checkpoint; preset 'uni' expects timm.*Wrong file"):
        CLASSES["uni"](small_cfg(BY_NAME["uni"], weights=path))


def test_a_timm_file_of_another_preset_names_keys(tmp_path: Path) -> None:
    uni = BY_NAME["uni"]
    path, _ = distributed_file(uni, small_cfg(uni), tmp_path)              # UNI's file given to Virchow2
    with pytest.raises(CheckpointError, match=r"missing keys: reg_token.*shape mismatches: .*mlp\.fc2\.weight.*"
                       r"preset 'virchow2' expects timm.*Wrong preset or wrong file"):
        CLASSES["virchow2"](small_cfg(BY_NAME["virchow2"], weights=path))


def test_presets_are_registered_with_cards(registries) -> None:
    names = set(registries.extractors.names())
    assert set(NAMES) <= names
    for name in NAMES:
        cls = registries.extractors.get(name)
        assert cls.card is not None and cls.card.params > 0 and cls.Config().weights is None
    assert registries.extractors.get("vit").card is None


def test_recipe_table_is_name_and_weights(tmp_path: Path) -> None:
    cfg = CLASSES["uni2-h"].Config.model_validate({"weights": str(tmp_path / "w.bin")})
    assert (cfg.patch_size, cfg.embed_dim, cfg.num_registers, cfg.mlp) == (14, 1536, 8, "swiglu_packed")
    with pytest.raises(CheckpointError, match="weights file not found"):
        CLASSES["uni"](small_cfg(BY_NAME["uni"], weights=tmp_path / "missing.bin"))


def test_extract_a_real_slide_with_a_reduced_preset(shared_data: Path, tmp_path: Path) -> None:
    from milkit.data.feature_formats import read_bag
    from milkit.extract import ExtractionSettings, extract_slides

    slide = shared_data / "wsi" / "cmu-1-small-region.svs"     # the smallest real H&E slide with an mpp
    if not slide.is_file():
        pytest.skip(f"{slide} not found")
    p = BY_NAME["virchow2"]
    cfg = small_cfg(p, depth=1)
    path, _ = distributed_file(p, cfg, tmp_path)
    encoder = CLASSES[p.name](cfg.model_copy(update={"weights": path})).eval()
    settings = ExtractionSettings(target_mpp=8.0, tile_size_px=32, num_workers=0, batch_size=16, seg_min_area=1.0)
    summary = extract_slides([slide], tmp_path / "out", extractor=encoder, settings=settings, progress=False)
    assert summary.done == ["cmu-1-small-region"] and not summary.failed
    bag = read_bag(tmp_path / "out" / "cmu-1-small-region.h5")
    assert bag.features.shape == (len(bag.coords), 2 * SMALL_WIDTH) and len(bag.coords) > 0
    assert bag.attrs["extractor"] == "virchow2" and bag.attrs["feature_dim"] == 2 * SMALL_WIDTH


def test_a_full_size_file_is_matched_to_the_preset_it_fits() -> None:
    from milkit.components.extractors.presets import fitting_presets

    with torch.device("meta"):
        uni = CLASSES["uni"](CLASSES["uni"].Config()).model.state_dict()
        phikon = CLASSES["phikon"](CLASSES["phikon"].Config()).model.state_dict()
        hf = to_hf(phikon, "hf-vit", 12)
    assert fitting_presets(uni) == ["uni"]
    assert fitting_presets(hf) == ["phikon"]
    assert fitting_presets({"x": torch.zeros(1)}) == []
