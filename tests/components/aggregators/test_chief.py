"""CHIEF slide encoder: the published architecture, the CHIEF_pretraining.pth key layout, parity with the
reference forward (padding included), the conformance kit."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from milkit.components.aggregators.chief import CHIEF, ORGANS, CHIEFConfig, rename
from milkit.errors import CheckpointError
from milkit.testing import check_aggregator
import _reference_chief as ref
from _bags import junk_padded

LENGTHS = [1, 7, 60, 300]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference() -> ref.CHIEF:
    torch.manual_seed(0)
    return ref.CHIEF(size_arg="small", dropout=True, n_classes=2).eval()


def published_file(tmp_path: Path, model: ref.CHIEF) -> Path:
    path = tmp_path / "CHIEF_pretraining.pth"
    torch.save(model.state_dict(), path)                       # as distributed: a plain state dict
    return path


def padded(lengths: list[int], dim: int = 768) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, dim)


def test_defaults_are_the_published_model() -> None:
    """size_arg 'small' (768 -> 512 -> 256), dropout 0.25; counts from the reference code (no published count:
    MIL-Lab's README lists CHIEF as "0.9M", which matches neither the file (1,185,032) nor its slide encoder)."""
    with torch.device("meta"):
        ours, theirs = CHIEF(CHIEFConfig(), in_dim=768), ref.CHIEF(size_arg="small")
        fused = CHIEF(CHIEFConfig(organ="colon"), in_dim=768)
    assert count(theirs) == 1_185_032                                              # every tensor of the file
    assert count(ours) == count(theirs.attention_net) == 656_641                   # what WSI_feature uses
    assert count(fused) == 656_641 + count(theirs.text_to_vision) == 1_050_369
    assert ours.out_dim == 512 and CHIEF.expected_features.encoders == ("ctranspath",)
    assert CHIEF.expected_features.dim == 768 and len(ORGANS) == 19 and ORGANS[13] == "colon"


@pytest.mark.parametrize("organ", [None, "colon"])
def test_the_published_key_layout_loads_and_reproduces_the_reference(tmp_path: Path, organ: str | None) -> None:
    theirs = reference()
    path = published_file(tmp_path, theirs)
    config = CHIEFConfig(weights=path, organ=organ)
    ours = CHIEF(config, in_dim=768).eval()
    assert CHIEF.pretrained_weights(config) == path and ours.weights_sha256 is not None
    feats, mask, coords = padded([40])
    with torch.no_grad():
        want = theirs(feats[0], torch.tensor([13]))
        got = ours(feats, mask, coords).embedding
    key = "WSI_feature" if organ is None else "WSI_feature_anatomical"
    torch.testing.assert_close(got, want[key], atol=1e-5, rtol=0)


def test_a_wrong_file_names_the_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = reference().state_dict()
    del state["attention_net.3.attention_c.weight"]
    state["attention_net.4.weight"] = torch.zeros(3)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing keys: attn_c\.weight.*unexpected keys: attention_net\.4\."
                       r"weight.*CHIEF_pretraining\.pth"):
        CHIEF(CHIEFConfig(weights=path), in_dim=768)
    with pytest.raises(CheckpointError, match=r"shape mismatches: fc\.0\.weight: file \(512, 768\) vs model "
                       r"\(512, 1024\)"):
        CHIEF(CHIEFConfig(weights=published_file(tmp_path, reference())), in_dim=1024)


@pytest.mark.parametrize("organ", [None, "brain"])
def test_parity_with_the_reference_on_a_padded_batch(organ: str | None) -> None:
    """One padded batch for milkit, each bag alone and unpadded for the reference; weights shared."""
    theirs = reference()
    ours = CHIEF(CHIEFConfig(organ=organ), in_dim=768).eval()
    ignore = ("classifiers.", "instance_classifiers.", "att_head.") + (("text_to_vision", "organ_embedding")
                                                                      if organ is None else ())
    ours.load_state_dict({k: v for k, v in rename(theirs.state_dict()).items() if not k.startswith(ignore)})
    feats, mask, coords = padded(LENGTHS)
    with torch.no_grad():
        out = ours(feats, mask, coords)
        for i, n in enumerate(LENGTHS):
            want = theirs(feats[i, :n], torch.tensor([ORGANS.index(organ or "brain")]))
            key = "WSI_feature" if organ is None else "WSI_feature_anatomical"
            torch.testing.assert_close(out.embedding[i:i + 1], want[key], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.attention[i, :n], F.softmax(want["attention_raw"], dim=1)[0],
                                       atol=1e-6, rtol=0)
    assert torch.all(out.attention[~mask] == 0)


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(CHIEF)
    check_aggregator(CHIEF, {"organ": "lung", "embed_dim": 32, "attn_dim": 16})
    assert registries.aggregators.get("chief") is CHIEF
