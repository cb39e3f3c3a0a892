"""FEATHER slide encoder: the published architecture, the HF model.safetensors key layout, parity with MIL-Lab's
``forward_features`` (padding included), the conformance kit."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from milkit.components.aggregators.feather import FEATHER, FEATHERConfig, convert
from milkit.errors import CheckpointError
from milkit.testing import check_aggregator
import _reference_feather as ref
from _bags import junk_padded

LENGTHS = [1, 5, 80, 400]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference(num_classes: int = 0) -> ref.ABMILModel:
    torch.manual_seed(0)
    return ref.ABMILModel(in_dim=768, num_classes=num_classes).eval()


def padded(lengths: list[int], dim: int = 768) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, dim, seed=3)


def test_defaults_are_the_published_model() -> None:
    """MIL-Lab's README gives FEATHER-24K "0.9M" parameters for each patch encoder: that is the UNI (1024-d) model,
    919,169; on CONCH v1.5 (768-d) the same ABMIL has 788,097 (both counted from the reference code)."""
    with torch.device("meta"):
        ours, theirs = FEATHER(FEATHERConfig(), in_dim=768), ref.ABMILModel(in_dim=768)
        uni = FEATHER(FEATHERConfig(), in_dim=1024)
    assert count(ours) == count(theirs) == 788_097
    assert count(uni) == 919_169 and round(count(uni) / 1e6, 1) == 0.9
    assert ours.out_dim == 512 and FEATHER.expected_features.encoders == ("conch-v1.5",)
    assert FEATHER.expected_features.dim == 768


@pytest.mark.parametrize(("filename", "num_classes", "prefix"),
                         [("model.safetensors", 0, True), ("model.safetensors", 108, True),
                          ("pytorch_model.bin", 0, False)])
def test_the_published_key_layout_loads_and_reproduces_the_reference(
        tmp_path: Path, filename: str, num_classes: int, prefix: bool) -> None:
    """HF's save_pretrained file (``model.*``; with or without a PC-108 classifier, which is ignored) and a bare
    state dict (``builder_utils.download_hf_state_dict`` adds ``model.`` itself) both load."""
    theirs = reference(num_classes)
    state = theirs.state_dict() if prefix else theirs.model.state_dict()
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    config = FEATHERConfig(weights=path)
    ours = FEATHER(config, in_dim=768).eval()
    assert FEATHER.pretrained_weights(config) == path and ours.weights_sha256 is not None
    feats, mask, coords = padded([50])
    with torch.no_grad():
        torch.testing.assert_close(ours(feats, mask, coords).embedding, theirs.model.forward_features(feats)[0],
                                   atol=1e-5, rtol=0)


def test_a_wrong_file_names_the_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = reference().state_dict()
    del state["model.global_attn.attention_c.bias"]
    state["model.global_attn.attention_d.weight"] = torch.zeros(1, 384)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"missing keys: global_attn\.attention_c\.bias.*unexpected keys: "
                       r"global_attn\.attention_d\.weight.*abmil\.base\.conch_v15\.pc108-24k"):
        FEATHER(FEATHERConfig(weights=path), in_dim=768)


def test_parity_with_the_reference_on_a_padded_batch() -> None:
    """One padded batch for milkit, each bag alone and unpadded for the reference; weights shared."""
    theirs = reference()
    ours = FEATHER(FEATHERConfig(), in_dim=768).eval()
    ours.load_state_dict(convert(theirs.state_dict()))
    feats, mask, coords = padded(LENGTHS)
    with torch.no_grad():
        out = ours(feats, mask, coords)
        for i, n in enumerate(LENGTHS):
            emb, log = theirs.model.forward_features(feats[i:i + 1, :n])
            torch.testing.assert_close(out.embedding[i:i + 1], emb, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.attention[i, :n], log["attention"].softmax(-1)[0, 0], atol=1e-6, rtol=0)
    assert torch.all(out.attention[~mask] == 0)


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(FEATHER)
    assert registries.aggregators.get("feather") is FEATHER
