"""ctranspath, conch-v1, conch-v1.5, plip: published sizes, the authors' key layouts, reference forwards.

Each reduced model gets a random state dict written in the layout its authors distribute (timm 0.5.4 Swin
with ConvStem and its buffers, open_clip CoCa, TITAN's CONCH v1.5 tower, Hugging Face CLIPModel), saved
as a tensors-only file, loaded through the extractor and compared with a forward written directly on
that state dict.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from milkit.components.extractors.conch import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ConchV1, ConchV15
from milkit.components.extractors.plip import PLIP
from milkit.components.extractors.swin import CTransPath
from milkit.errors import CheckpointError
from milkit.extractor import IMAGENET_MEAN, IMAGENET_STD
from milkit.testing.extractor import check_extractor

SMALL = {
    CTransPath: {"img_size": 64, "embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), "window_size": 4},
    ConchV1: {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2, "pool_dim": 8,
              "pool_heads": 2},
    ConchV15: {"img_size": 64, "patch_size": 8, "pos_grid": 4, "embed_dim": 16, "depth": 2, "num_heads": 2,
               "pool_dim": 12, "pool_heads": 2},
    PLIP: {"img_size": 32, "patch_size": 8, "width": 16, "layers": 2, "heads": 2, "projection_dim": 8},
}

# Published sizes the exact counts are checked against:
# * timm swin_tiny_patch4_window7_224: 28,288,354 with its 1000-class head (Swin-T "28M", Liu et al.,
#   ICCV 2021, Table 1); CTransPath drops the head (768 * 1000 + 1000) and swaps the 4x4 patch conv
#   (4*4*3*96 + 96) for the ConvStem (3*12*9 + 24 + 12*24*9 + 48 + 24*96 + 96).
# * timm vit_base_patch16_224: 86,567,656 with head (ViT-B "86M", Dosovitskiy et al., ICLR 2021,
#   Table 1); CONCH's trunk has no head and 785 instead of 197 positions (448 px).
# * timm vit_large_patch16_224: 304,326,632 with head; CONCH v1.5 adds LayerScale (2 x 1024 per block).
# * open_clip ViT-B-32 image tower (what PLIP fine-tunes): 87.85M, i.e. the HF CLIP vision model
#   (87,456,000) + visual_projection (768 x 512).
CTRANSPATH_PARAMS = 28_288_354 - (768 * 1000 + 1000) - (4 * 4 * 3 * 96 + 96) + (324 + 24 + 2592 + 48 + 2304 + 96)
CONCH_V1_TRUNK = 86_567_656 - (768 * 1000 + 1000) + (785 - 197) * 768
CONCH_V15_TRUNK = 304_326_632 - (1024 * 1000 + 1000) + 2 * 1024 * 24


def meta(cls, **cfg):
    with torch.device("meta"):
        return cls(cls.Config(**cfg))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("cls", "dim"), [(CTransPath, 768), (ConchV1, 512), (ConchV15, 768), (PLIP, 512)],
                         ids=lambda c: getattr(c, "name", str(c)))
def test_full_size_matches_the_published_architecture(cls, dim: int) -> None:
    model = meta(cls)
    assert count(model) == cls.card.params and model.feature_dim == dim
    assert model.tile_size_px == cls.card.input_px
    if cls is CTransPath:
        assert cls.card.params == CTRANSPATH_PARAMS and round(cls.card.params / 1e6) == 28
    elif cls is ConchV1:
        assert count(model.visual.trunk) == CONCH_V1_TRUNK
        assert model.mean == OPENAI_CLIP_MEAN and model.std == OPENAI_CLIP_STD
    elif cls is ConchV15:
        assert count(model.visual.trunk) == CONCH_V15_TRUNK and model.mean == IMAGENET_MEAN
    else:
        assert count(model.model.vision_model) == 87_456_000 and round(cls.card.params / 1e4) == 8785


@pytest.mark.parametrize("cls", list(SMALL), ids=lambda c: c.name)
def test_contract(cls) -> None:
    check_extractor(cls, SMALL[cls])


def redraw(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand_like(v) + 0.5
        else:
            out[k] = torch.randn_like(v) * 0.2
    return out


def norm(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def ln(x, s, p, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], s[p + ".weight"], s[p + ".bias"], eps=eps)


def lin(x, s, p):
    return F.linear(x, s[p + ".weight"], s.get(p + ".bias"))


def attend(q, k, v, heads):
    """[b, n, d] queries / [b, m, d] keys and values -> [b, n, d], softmax(q k^T / sqrt(d_head)) v."""
    b, n, d = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), -1) @ v
    return a.transpose(1, 2).reshape(b, n, d)


# ----------------------------------------------------------------------------------------- CTransPath


def timm054_buffers(c: dict) -> dict[str, torch.Tensor]:
    """relative_position_index and attn_mask as timm 0.5.4 stores them, written out element by element."""
    out = {}
    for i, depth in enumerate(c["depths"]):
        res = c["img_size"] // 4 // 2**i
        for j in range(depth):
            w, s = (res, 0) if res <= c["window_size"] else (c["window_size"], (c["window_size"] // 2) * (j % 2))
            idx = torch.zeros(w * w, w * w, dtype=torch.long)
            for a in range(w * w):
                for b in range(w * w):
                    idx[a, b] = (a // w - b // w + w - 1) * (2 * w - 1) + (a % w - b % w + w - 1)
            out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = idx
            if s:
                region = torch.zeros(res, res)
                for y in range(res):
                    for x in range(res):
                        region[y, x] = 3 * (0 if y < res - w else 1 if y < res - s else 2) + (
                            0 if x < res - w else 1 if x < res - s else 2)
                win = region.view(res // w, w, res // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)
                out[f"layers.{i}.blocks.{j}.attn_mask"] = torch.where(win[:, None, :] != win[:, :, None], -100.0, 0.0)
    return out


def swin_reference(s: dict, c: dict, x: torch.Tensor) -> torch.Tensor:
    x = norm(x, IMAGENET_MEAN, IMAGENET_STD)
    for i in (0, 3):
        x = F.conv2d(x, s[f"patch_embed.proj.{i}.weight"], stride=2, padding=1)
        p = f"patch_embed.proj.{i + 1}"
        x = F.relu(F.batch_norm(x, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"], s[p + ".bias"]))
    x = F.conv2d(x, s["patch_embed.proj.6.weight"], s["patch_embed.proj.6.bias"])
    x = ln(x.flatten(2).transpose(1, 2), s, "patch_embed.norm")
    b = x.shape[0]
    for i, depth in enumerate(c["depths"]):
        res, h, d = c["img_size"] // 4 // 2**i, c["num_heads"][i], x.shape[-1]
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            w, sh = (res, 0) if res <= c["window_size"] else (c["window_size"], (c["window_size"] // 2) * (j % 2))
            y = torch.roll(ln(x, s, p + "norm1").view(b, res, res, d), (-sh, -sh), (1, 2))
            y = y.view(b, res // w, w, res // w, w, d).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, d)
            n = w * w
            q, k, v = lin(y, s, p + "attn.qkv").reshape(-1, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
            att = (q * (d // h) ** -0.5) @ k.transpose(-2, -1)
            rel = s[p + "attn.relative_position_bias_table"][s[p + "attn.relative_position_index"].view(-1)]
            att = att + rel.view(n, n, -1).permute(2, 0, 1)
            if p + "attn_mask" in s:
                nw = s[p + "attn_mask"].shape[0]
                att = (att.view(-1, nw, h, n, n) + s[p + "attn_mask"][None, :, None]).view(-1, h, n, n)
            y = lin((torch.softmax(att, -1) @ v).transpose(1, 2).reshape(-1, n, d), s, p + "attn.proj")
            y = y.view(b, res // w, res // w, w, w, d).permute(0, 1, 3, 2, 4, 5).reshape(b, res, res, d)
            x = x + torch.roll(y, (sh, sh), (1, 2)).reshape(b, res * res, d)
            x = x + lin(F.gelu(lin(ln(x, s, p + "norm2"), s, p + "mlp.fc1")), s, p + "mlp.fc2")
        if i < len(c["depths"]) - 1:
            g = x.view(b, res, res, d)
            g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1)
            p = f"layers.{i}.downsample."
            x = F.linear(ln(g.reshape(b, -1, 4 * d), s, p + "norm"), s[p + "reduction.weight"])
    return ln(x, s, "norm").mean(1)


def ctranspath_file(tmp_path: Path, seed: int = 0) -> tuple[Path, dict]:
    c = SMALL[CTransPath]
    state = redraw(CTransPath(CTransPath.Config(**c)).model.state_dict(), seed)
    state.update(timm054_buffers(c))
    path = tmp_path / "ctranspath.pth"
    torch.save({"model": state}, path)
    return path, state


def test_ctranspath_loads_the_authors_layout(tmp_path: Path) -> None:
    path, state = ctranspath_file(tmp_path)
    assert "layers.0.blocks.1.attn_mask" in state and "layers.2.blocks.1.attn_mask" not in state  # 4 px = window
    model = CTransPath(CTransPath.Config(**SMALL[CTransPath], weights=path)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), swin_reference(state, SMALL[CTransPath], x), atol=1e-5, rtol=1e-4)
    for key in ("layers.0.blocks.1.attn_mask", "layers.0.blocks.0.attn.relative_position_index"):
        torch.testing.assert_close(model.model.get_buffer(key), state[key])        # recomputed = the file's
    assert model.feature_dim == 128 and len(model.weights_sha256) == 64


def test_ctranspath_wrong_files(tmp_path: Path) -> None:
    path, state = ctranspath_file(tmp_path)
    cfg = {**SMALL[CTransPath]}
    plain = {k: v for k, v in state.items() if not k.startswith("patch_embed.proj.")}
    plain["patch_embed.proj.weight"], plain["patch_embed.proj.bias"] = torch.zeros(16, 3, 4, 4), torch.zeros(16)
    save_file(plain, str(tmp_path / "swin.safetensors"))
    with pytest.raises(CheckpointError, match="plain Swin patch embedding.*ImageNet Swin-T"):
        CTransPath(CTransPath.Config(**cfg, weights=tmp_path / "swin.safetensors"))
    moved = {k.replace("layers.0.downsample.", "layers.3.downsample."): v for k, v in state.items()}
    torch.save({"model": moved}, tmp_path / "new_timm.pth")
    with pytest.raises(CheckpointError, match="timm >= 0.9"):
        CTransPath(CTransPath.Config(**cfg, weights=tmp_path / "new_timm.pth"))
    broken = dict(state)
    broken.pop("layers.1.blocks.0.attn.relative_position_bias_table")
    torch.save({"model": broken}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: layers\.1\.blocks\.0\.attn\.relative_position_bias"):
        CTransPath(CTransPath.Config(**cfg, weights=tmp_path / "broken.pth"))


# ----------------------------------------------------------------------------------------------- CONCH


def vit_tokens(s: dict, p: str, x: torch.Tensor, heads: int, patch: int, ls: bool, pos: torch.Tensor) -> torch.Tensor:
    t = F.conv2d(x, s[p + "patch_embed.proj.weight"], s[p + "patch_embed.proj.bias"], stride=patch)
    t = torch.cat([s[p + "cls_token"].expand(x.shape[0], -1, -1), t.flatten(2).transpose(1, 2)], 1) + pos
    i = 0
    while f"{p}blocks.{i}.norm1.weight" in s:
        q = f"{p}blocks.{i}."
        y = ln(t, s, q + "norm1", 1e-6)
        a, k, v = lin(y, s, q + "attn.qkv").chunk(3, -1)
        a = lin(attend(a, k, v, heads), s, q + "attn.proj")
        t = t + (a * s[q + "ls1.gamma"] if ls else a)
        m = lin(F.gelu(lin(ln(t, s, q + "norm2", 1e-6), s, q + "mlp.fc1")), s, q + "mlp.fc2")
        t = t + (m * s[q + "ls2.gamma"] if ls else m)
        i += 1
    return ln(t, s, p + "norm", 1e-6)


def conch_v1_reference(s: dict, c: dict, x: torch.Tensor) -> torch.Tensor:
    v = "visual."
    t = vit_tokens(s, v + "trunk.", norm(x, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), c["num_heads"], c["patch_size"],
                   False, s[v + "trunk.pos_embed"])
    p, d = v + "attn_pool_contrast.", c["pool_dim"]
    kv = ln(t, s, p + "ln_k")
    q = ln(s[p + "query"], s, p + "ln_q").expand(x.shape[0], -1, -1)
    bias = s[p + "attn.in_proj_bias"]
    o = attend(F.linear(q, s[p + "attn.q_proj_weight"], bias[:d]),
               F.linear(kv, s[p + "attn.k_proj_weight"], bias[d:2 * d]),
               F.linear(kv, s[p + "attn.v_proj_weight"], bias[2 * d:]), c["pool_heads"])
    return ln(lin(o, s, p + "attn.out_proj")[:, 0], s, v + "ln_contrast")


def conch_v1_file(tmp_path: Path) -> tuple[Path, dict]:
    c = SMALL[ConchV1]
    state = {f"visual.{k}": v for k, v in redraw(ConchV1(ConchV1.Config(**c)).visual.state_dict(), 1).items()}
    state.update({  # the rest of the CoCa checkpoint, which the extractor ignores
        "visual.proj_contrast": torch.randn(8, 8), "visual.attn_pool_caption.query": torch.randn(4, 16),
        "visual.ln_caption.weight": torch.ones(16), "text.token_embedding.weight": torch.randn(10, 16),
        "text_decoder.resblocks.0.ln_1.weight": torch.ones(16), "logit_scale": torch.tensor(2.0),
    })
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    return path, state


def test_conch_v1_loads_open_clip_coca(tmp_path: Path) -> None:
    path, state = conch_v1_file(tmp_path)
    model = ConchV1(ConchV1.Config(**SMALL[ConchV1], weights=path)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), conch_v1_reference(state, SMALL[ConchV1], x), atol=1e-5, rtol=1e-4)


def conch_v15_reference(s: dict, c: dict, x: torch.Tensor) -> torch.Tensor:
    g, side = c["img_size"] // c["patch_size"], c["pos_grid"]
    pos = s["trunk.pos_embed"]
    grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((g + 0.1) / side, (g + 0.1) / side), mode="bicubic")
    pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, g * g, -1)], 1)
    t = vit_tokens(s, "trunk.", norm(x, IMAGENET_MEAN, IMAGENET_STD), c["num_heads"], c["patch_size"], True, pos)
    p = "attn_pool_contrast."
    q = F.linear(ln(s[p + "query"], s, p + "ln_q"), s[p + "to_q.weight"]).expand(x.shape[0], -1, -1)
    k, v = F.linear(ln(t, s, p + "ln_k"), s[p + "to_kv.weight"]).chunk(2, -1)
    o = F.linear(attend(q, k, v, c["pool_heads"]), s[p + "to_out.weight"])
    return ln(o[:, 0], s, "ln_contrast")


def conch_v15_file(tmp_path: Path) -> tuple[Path, dict]:
    state = redraw(ConchV15(ConchV15.Config(**SMALL[ConchV15])).visual.state_dict(), 2)
    path = tmp_path / "pytorch_model_vision.bin"
    torch.save(state, path)
    return path, state


def test_conch_v15_loads_titan_tower(tmp_path: Path) -> None:
    path, state = conch_v15_file(tmp_path)
    assert state["trunk.pos_embed"].shape == (1, 17, 16)                         # 4 x 4 grid, input grid 8 x 8
    model = ConchV15(ConchV15.Config(**SMALL[ConchV15], weights=path)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), conch_v15_reference(state, SMALL[ConchV15], x), atol=1e-5, rtol=1e-4)
    bigger = dict(state, **{"trunk.pos_embed": torch.randn(1, 65, 16)})         # stored for 8 x 8: resampled
    torch.save(bigger, tmp_path / "big_pos.bin")
    assert ConchV15(ConchV15.Config(**SMALL[ConchV15], weights=tmp_path / "big_pos.bin")).visual.trunk.pos_embed.shape \
        == (1, 17, 16)


def test_conch_files_swapped_name_the_other_encoder(tmp_path: Path) -> None:
    v1, _ = conch_v1_file(tmp_path)
    v15, state = conch_v15_file(tmp_path)
    with pytest.raises(CheckpointError, match="CONCH v1's pytorch_model.bin.*conch-v1"):
        ConchV15(ConchV15.Config(**SMALL[ConchV15], weights=v1))
    with pytest.raises(CheckpointError, match=r"no visual\.\* keys.*CONCH v1\.5.*conch-v1.5"):
        ConchV1(ConchV1.Config(**SMALL[ConchV1], weights=v15))
    state.pop("ln_contrast.bias")
    state["attn_pool_contrast.to_q.bias"] = torch.zeros(12)
    torch.save(state, tmp_path / "edited.bin")
    with pytest.raises(CheckpointError, match=r"missing keys: ln_contrast\.bias.*unexpected keys: attn_pool_contrast"):
        ConchV15(ConchV15.Config(**SMALL[ConchV15], weights=tmp_path / "edited.bin"))


# ------------------------------------------------------------------------------------------------ PLIP


def plip_reference(s: dict, c: dict, x: torch.Tensor) -> torch.Tensor:
    v = "vision_model."
    t = F.conv2d(norm(x, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), s[v + "embeddings.patch_embedding.weight"],
                 stride=c["patch_size"]).flatten(2).transpose(1, 2)
    cls = s[v + "embeddings.class_embedding"].expand(x.shape[0], 1, -1)
    t = ln(torch.cat([cls, t], 1) + s[v + "embeddings.position_embedding.weight"], s, v + "pre_layrnorm")
    for i in range(c["layers"]):
        p = f"{v}encoder.layers.{i}."
        y = ln(t, s, p + "layer_norm1")
        a = attend(*(lin(y, s, p + f"self_attn.{n}_proj") for n in "qkv"), c["heads"])
        t = t + lin(a, s, p + "self_attn.out_proj")
        u = lin(ln(t, s, p + "layer_norm2"), s, p + "mlp.fc1")
        t = t + lin(u * torch.sigmoid(1.702 * u), s, p + "mlp.fc2")
    return F.linear(ln(t[:, 0], s, v + "post_layernorm"), s["visual_projection.weight"])


def plip_file(tmp_path: Path) -> tuple[Path, dict]:
    state = redraw(PLIP(PLIP.Config(**SMALL[PLIP])).model.state_dict(), 3)
    state.update({"vision_model.embeddings.position_ids": torch.arange(17)[None],
                  "text_model.embeddings.token_embedding.weight": torch.randn(10, 16),
                  "text_projection.weight": torch.randn(8, 16), "logit_scale": torch.tensor(2.6592)})
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    return path, state


def test_plip_loads_hf_clip(tmp_path: Path) -> None:
    path, state = plip_file(tmp_path)
    model = PLIP(PLIP.Config(**SMALL[PLIP], weights=path)).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plip_reference(state, SMALL[PLIP], x), atol=1e-5, rtol=1e-4)


def test_plip_wrong_files(tmp_path: Path) -> None:
    _, state = plip_file(tmp_path)
    save_file({"visual.conv1.weight": torch.zeros(16, 3, 8, 8), "visual.proj": torch.zeros(16, 8)},
              str(tmp_path / "openai.safetensors"))
    with pytest.raises(CheckpointError, match="OpenAI/open_clip CLIP checkpoint"):
        PLIP(PLIP.Config(**SMALL[PLIP], weights=tmp_path / "openai.safetensors"))
    save_file({k: v for k, v in state.items() if k != "visual_projection.weight"}, str(tmp_path / "vision.safetensors"))
    with pytest.raises(CheckpointError, match="lack visual_projection.weight"):
        PLIP(PLIP.Config(**SMALL[PLIP], weights=tmp_path / "vision.safetensors"))
    state.pop("vision_model.encoder.layers.1.mlp.fc2.bias")
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys: vision_model\.encoder\.layers\.1\.mlp\.fc2\.bias"):
        PLIP(PLIP.Config(**SMALL[PLIP], weights=tmp_path / "broken.safetensors"))


def test_registered(registries) -> None:
    assert {"ctranspath", "conch-v1", "conch-v1.5", "plip"} <= set(registries.extractors.names())
    for name in ("ctranspath", "conch-v1", "conch-v1.5", "plip"):
        assert registries.extractors.get(name).card is not None
