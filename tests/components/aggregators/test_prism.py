"""PRISM slide encoder: the published architecture (full size, on the meta device), the Prism file's key layout
(with and without the aliases of shared blocks), parity with the reference Perceiver (padding included), the kit."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from milkit.components.aggregators.prism import PRISM, PRISMConfig
from milkit.errors import CheckpointError
from milkit.testing import check_aggregator
import _reference_prism as ref
from _bags import junk_padded

IN_DIM = 24
SMALL = {"latent_seq": 6, "latent_dim": 32, "mhsa_heads": 4, "perceiver_depth": 4, "transformer_depth": 2}
LENGTHS = [1, 8, 45, 130]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared parameters once


def reference(**cfg) -> ref.Prism:
    torch.manual_seed(0)
    return ref.Prism(ref.PerceiverConfig(context_dim=IN_DIM, **{**SMALL, **cfg})).eval()


def ours_like(theirs: ref.Prism, **cfg) -> PRISM:
    model = PRISM(PRISMConfig(**{**SMALL, **cfg}), in_dim=IN_DIM).eval()
    model.load_state_dict(model.convert(theirs.state_dict()))
    return model


def padded(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, IN_DIM, seed=4)


def hf_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What ``save_pretrained`` writes to safetensors: one name per shared tensor (it deletes the aliases in
    sorted order but the last), plus the keys of the rest of Prism (stand-ins for BioGPT and the heads)."""
    groups: dict[int, list[str]] = {}
    for k, v in state.items():
        groups.setdefault(v.data_ptr(), []).append(k)
    kept = {sorted(names)[-1]: state[sorted(names)[-1]].clone() for names in groups.values()}
    return {**kept, "text_decoder.model.biogpt.embed_tokens.weight": torch.zeros(3, 4),
            "img_to_latents.to_latents.weight": torch.zeros(5, 32), "temperature": torch.tensor(2.66)}


def test_defaults_are_the_published_model() -> None:
    """PerceiverConfig's defaults (latent_seq 512, latent_dim 1280, depth 8 x (1 + 6), shared cross-attention
    from layer 1 and transformer from layer 0, 1 cross / 8 self heads, GEGLU) over Virchow's 2560; the count is
    the reference code's (no published count of the slide encoder found), shared blocks once."""
    with torch.device("meta"):
        ours = PRISM(PRISMConfig(), in_dim=2560)
        theirs = ref.Prism(ref.PerceiverConfig())
    assert count(ours) == count(theirs) == 99_037_440
    assert ours.out_dim == 1280 and PRISM.provides_tokens
    assert PRISM.expected_features.encoders == ("virchow",) and PRISM.expected_features.dim == 2560
    got = {k: v.shape for k, v in ours.convert(theirs.state_dict()).items()}  # the file's names and shapes
    assert got == {k: v.shape for k, v in ours.state_dict().items()}


@pytest.mark.parametrize("layout", ["torch.save", "save_pretrained"])
def test_the_published_key_layout_loads_and_reproduces_the_reference(tmp_path: Path, layout: str) -> None:
    theirs = reference()
    state = {k: v.clone() for k, v in theirs.state_dict().items()}
    if layout == "torch.save":                                    # every alias of the shared blocks
        path = tmp_path / "pytorch_model.bin"
        torch.save(state, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file(hf_layout(theirs.state_dict()), str(path))
    config = PRISMConfig(weights=path, **SMALL)
    ours = PRISM(config, in_dim=IN_DIM).eval()
    assert PRISM.pretrained_weights(config) == path and ours.weights_sha256 is not None
    feats, mask, coords = padded([30])
    with torch.no_grad():
        want = theirs.slide_representations(feats)
        out = ours(feats, mask, coords)
    torch.testing.assert_close(out.embedding, want["image_embedding"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.tokens, want["image_latents"], atol=1e-5, rtol=0)


def test_a_wrong_file_names_the_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in reference().state_dict().items()}
    del state["image_resampler.cls_norm.weight"]
    state["image_resampler.perceiver.pos_emb"] = torch.zeros(3)
    path = tmp_path / "model.bin"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing keys: cls_norm\.weight.*unexpected keys: pos_emb.*paige-ai"):
        PRISM(PRISMConfig(weights=path, **SMALL), in_dim=IN_DIM)
    state = {k: v.clone() for k, v in reference().state_dict().items()}       # layer 3 no longer shares layer 1's
    state["image_resampler.perceiver.layers.3.xattn.xattn.to_q.weight"] += 1
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"layers\.3\.xattn\.xattn\.to_q\.weight differs from the block it "
                       r"shares weights with \(xattn\.1\.xattn\.to_q\.weight\).*share_xattn_start_layer"):
        PRISM(PRISMConfig(weights=path, **SMALL), in_dim=IN_DIM)


@pytest.mark.parametrize("cfg", [{}, {"share_xattn_start_layer": 0, "xattn_heads": 2},
                                 {"share_xattn_start_layer": 9, "share_tf_start_layer": 2, "mlp_mult": 2}])
def test_parity_with_the_reference_on_a_padded_batch(cfg: dict) -> None:
    """One padded batch for milkit, each bag alone and unpadded for the reference; weights shared."""
    theirs = reference(**cfg)
    ours = ours_like(theirs, **cfg)
    feats, mask, coords = padded(LENGTHS)
    with torch.no_grad():
        out = ours(feats, mask, coords)
        for i, n in enumerate(LENGTHS):
            want = theirs.slide_representations(feats[i:i + 1, :n])
            torch.testing.assert_close(out.embedding[i:i + 1], want["image_embedding"], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.tokens[i:i + 1], want["image_latents"], atol=1e-5, rtol=0)
    assert out.token_mask.all() and out.attention is None


def test_an_empty_bag_gives_finite_outputs() -> None:
    model = PRISM(PRISMConfig(**SMALL), in_dim=IN_DIM).eval()
    feats, mask, coords = padded([5, 0])
    with torch.no_grad():
        out = model(feats, mask, coords)
    assert torch.isfinite(out.embedding).all() and torch.isfinite(out.tokens).all()


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(PRISM, SMALL)
    check_aggregator(PRISM, {**SMALL, "share_xattn_start_layer": 0, "transformer_depth": 0})
    assert registries.aggregators.get("prism") is PRISM
