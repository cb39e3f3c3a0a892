"""MADELEINE slide encoder: the published architecture, the model.pt key layout, parity with the reference
``encode_he`` (padding included), the conformance kit."""

from pathlib import Path

import pytest
import torch

from milkit.components.aggregators.madeleine import MADELEINE, MADELEINEConfig, convert
from milkit.errors import CheckpointError
from milkit.testing import check_aggregator
import _reference_madeleine as ref
from _bags import junk_padded

LENGTHS = [1, 9, 64, 250]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference() -> ref.MADELEINE:
    torch.manual_seed(0)
    return ref.MADELEINE().eval()


def padded(lengths: list[int], dim: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, dim, seed=2)


def test_defaults_are_the_published_model() -> None:
    """4 heads over CONCH v1 (512) -> 512; counts from the reference code (no published count found): the file
    holds 4,996,740 parameters, of which token_projector (262,272; the pretraining's local loss) is unused."""
    with torch.device("meta"):
        ours, theirs = MADELEINE(MADELEINEConfig(), in_dim=512), ref.MADELEINE()
    assert count(theirs) == 4_996_740
    assert count(ours) == count(theirs) - count(theirs.token_projector) == 4_734_468
    assert ours.out_dim == 512 and MADELEINE.expected_features.encoders == ("conch-v1",)
    assert MADELEINE.expected_features.dim == 512


@pytest.mark.parametrize("prefix", ["", "module."])
def test_the_published_key_layout_loads_and_reproduces_the_reference(tmp_path: Path, prefix: str) -> None:
    theirs = reference()
    path = tmp_path / "model.pt"
    torch.save({prefix + k: v for k, v in theirs.state_dict().items()}, path)     # DDP checkpoints: module.*
    config = MADELEINEConfig(weights=path)
    ours = MADELEINE(config, in_dim=512).eval()
    assert MADELEINE.pretrained_weights(config) == path and ours.weights_sha256 is not None
    feats, mask, coords = padded([33])
    with torch.no_grad():
        torch.testing.assert_close(ours(feats, mask, coords).embedding, theirs.encode_he(feats), atol=1e-5, rtol=0)


def test_a_wrong_file_names_the_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = reference().state_dict()
    del state["projector.bias"]
    state["embedding.weight"] = torch.zeros(5, 32)                               # a stain-encoding checkpoint
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing keys: projector\.bias.*unexpected keys: embedding\.weight"
                       r".*MahmoodLab/madeleine"):
        MADELEINE(MADELEINEConfig(weights=path), in_dim=512)


def test_parity_with_the_reference_on_a_padded_batch() -> None:
    """One padded batch for milkit, each bag alone and unpadded for the reference; weights shared."""
    theirs = reference()
    ours = MADELEINE(MADELEINEConfig(), in_dim=512).eval()
    ours.load_state_dict({k: v for k, v in convert(theirs.state_dict()).items() if not k.startswith("token_proj")})
    feats, mask, coords = padded(LENGTHS)
    with torch.no_grad():
        out = ours(feats, mask, coords)
        for i, n in enumerate(LENGTHS):
            bag = feats[i:i + 1, :n]
            torch.testing.assert_close(out.embedding[i:i + 1], theirs.encode_he(bag), atol=1e-5, rtol=0)
            heads = theirs.attention(bag)[0]                                       # n c
            torch.testing.assert_close(out.aux["head_attention"][i, :n], heads, atol=1e-6, rtol=0)
            torch.testing.assert_close(out.attention[i, :n], heads.mean(-1), atol=1e-6, rtol=0)
    assert torch.all(out.attention[~mask] == 0)


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(MADELEINE, {"embed_dim": 32, "attn_dim": 16})
    check_aggregator(MADELEINE, {"embed_dim": 16, "attn_dim": 8, "n_heads": 1})
    assert registries.aggregators.get("madeleine") is MADELEINE
