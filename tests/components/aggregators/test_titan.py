"""TITAN slide encoder: the published size, the HF model.safetensors key layout, parity with the reference
forward (padding, grid inference and duplicate cells included), the conformance kit, the feature check."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from milkit.components.aggregators.titan import TITAN, TITANConfig
from milkit.data.bags import BagStore
from milkit.data.feature_check import check_feature_source
from milkit.data.feature_formats import write_bag
from milkit.errors import CheckpointError, DataError
from milkit.nn.alibi import alibi_slopes
from milkit.nn.patch_grid import grid_cells
from milkit.testing import check_aggregator
import _reference_titan as ref

SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 4, "pooler_heads": 2, "pooler_queries": 5}
IN_DIM = 24
PS = 512                                                     # patch_size_level0 of a 20x slide


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference(heads: int = 4) -> ref.VisionTransformer:
    torch.manual_seed(0)
    model = ref.VisionTransformer(embed_dim=32, depth=2, num_heads=heads, mlp_patch_embed_dim=IN_DIM,
                                  attn_pooler_queries=5, attn_pooler_heads=2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)                                                   # away from the init's symmetries
    return model


def published_file(tmp_path: Path, model: ref.VisionTransformer) -> Path:
    """As huggingface.co/MahmoodLab/TITAN distributes it: the whole Titan model, ``vision_encoder.*`` among others."""
    state = {f"vision_encoder.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state["text_encoder.token_embedding.weight"] = torch.randn(7, 32)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    return path


def slide(n: int, seed: int, *, side: int = 9, dup: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """feats [n, D] and int64 level-0 coords [n, 2] on a sparse grid of 512-px patches (offset from 0); the first
    two patches are neighbours, so the grid step can be read off the coords."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.cat([torch.tensor([0, 1]), 2 + torch.randperm(side * side - 2, generator=gen)])[:n]
    if dup:
        cells[-1] = cells[0]                                                    # two patches in one cell
    coords = torch.stack([cells // side, cells % side], 1) * PS + torch.tensor([3 * PS, 5 * PS])
    return torch.randn(n, IN_DIM, generator=gen), coords


def test_defaults_are_the_published_model() -> None:
    """TitanVisionConfig's defaults (6 blocks, 768 wide, 12 heads, pooler 128 queries x 8 heads); 48,539,904
    parameters with `proj` = the reference's vision encoder, the 48.5M reported for TITAN beside Patho-Bench
    (FEATHER, Shao et al., ICML 2025, as quoted in a survey; slide2vec's README rounds it to 49M)."""
    with torch.device("meta"):
        full, ours = TITAN(TITANConfig(projection=True), in_dim=768), TITAN(TITANConfig(), in_dim=768)
        theirs = ref.VisionTransformer(embed_dim=768, depth=6, num_heads=12, mlp_patch_embed_dim=768)
    assert count(full) == count(theirs) == 48_539_904 and round(count(full) / 1e6, 1) == 48.5
    assert count(ours) == 48_539_904 - 768 * 768                                # no_proj: `proj` is not built
    assert ours.out_dim == 768 and TITAN.provides_tokens and TITAN.permutation_invariant
    assert TITAN.expected_features.encoders == ("conch-v1.5",) and TITAN.expected_features.dim == 768
    assert alibi_slopes(12) == pytest.approx([2.0**-i for i in range(1, 9)] + [2.0**-(i + 0.5) for i in range(4)])


@pytest.mark.parametrize("projection", [False, True])
def test_the_published_key_layout_loads_and_reproduces_the_reference(tmp_path: Path, projection: bool) -> None:
    theirs = reference()
    ours = TITAN(TITANConfig(**SMALL, weights=published_file(tmp_path, theirs), projection=projection),
                 in_dim=IN_DIM).eval()
    assert ours.weights_sha256 is not None and len(ours.weights_sha256) == 64
    for n, seed in ((2, 0), (6, 1), (23, 2), (40, 3)):  # 1 patch: upstream get_alibi fails (a 1-element mask)
        feats, coords = slide(n, seed)
        with torch.no_grad():
            pooled, tokens = theirs(feats[None], coords[None], PS, no_proj=not projection)
            out = ours(feats[None], torch.ones(1, n, dtype=torch.bool), coords[None].float())
        torch.testing.assert_close(out.embedding, pooled, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.tokens, tokens, atol=1e-5, rtol=0)


def test_a_wrong_file_names_the_keys(tmp_path: Path) -> None:
    theirs = reference()
    state = {f"vision_encoder.{k}": v for k, v in theirs.state_dict().items() if "attn_pool_contrastive" not in k}
    state["vision_encoder.masked_embed"] = torch.zeros(1, 32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys: attn_pool_contrastive\..*unexpected keys: masked_embed"
                       r".*Aggregator 'titan' expects model.safetensors of huggingface.co/MahmoodLab/TITAN"):
        TITAN(TITANConfig(**SMALL, weights=tmp_path / "bad.safetensors"), in_dim=IN_DIM)
    with pytest.raises(CheckpointError, match="shape mismatches: patch_embed.0.weight"):
        TITAN(TITANConfig(**SMALL, weights=published_file(tmp_path, theirs)), in_dim=16)


def test_parity_in_padded_batches_with_the_grid_step_read_off_the_coords() -> None:
    """A padded batch (junk features and coords in the padding) = each slide alone in the reference at
    patch_size_lv0 = 512, inferred from the coords; a 40x slide (1024-px steps) in the same batch too."""
    theirs = reference()
    ours = TITAN(TITANConfig(**SMALL), in_dim=IN_DIM).eval()
    ours.load_state_dict({k.replace("blocks.modules_list.", "blocks."): v for k, v in theirs.state_dict().items()
                          if k != "proj"})
    bags = [slide(17, 4), slide(5, 5, dup=True), slide(30, 6), slide(2, 7)]
    bags[2] = (bags[2][0], bags[2][1] * 2)                                      # 40x: steps of 1024 px
    n = 36
    feats, coords = torch.randn(len(bags), n, IN_DIM) * 10 + 3, torch.rand(len(bags), n, 2) * 1e5
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, (f, c) in enumerate(bags):
        feats[i, : len(f)], coords[i, : len(f)], mask[i, : len(f)] = f, c.float(), True
    with torch.no_grad():
        out = ours(feats, mask, coords)
        for i, (f, c) in enumerate(bags):
            pooled, tokens = theirs(f[None], c[None], PS * (2 if i == 2 else 1), no_proj=True)
            torch.testing.assert_close(out.embedding[i], pooled[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.tokens[i], tokens[0], atol=1e-5, rtol=0)
    assert torch.all(out.attention[~mask] == 0) and out.token_mask.all()
    torch.testing.assert_close(out.attention.sum(1), torch.ones(len(bags)))
    assert out.attention[1, 0] == out.attention[1, 4]                           # one cell, one weight


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(TITAN, SMALL)
    check_aggregator(TITAN, {**SMALL, "projection": True, "patch_size_level0": 256})
    assert registries.aggregators.get("titan") is TITAN


def test_coords_all_at_one_place_are_refused() -> None:
    model = TITAN(TITANConfig(**SMALL), in_dim=IN_DIM).eval()
    with pytest.raises(DataError, match="all 3 patches of a bag sit at"):
        model(torch.randn(1, 3, IN_DIM), torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 3, 2))


def test_the_feature_check_refuses_features_of_another_extractor(tmp_path: Path) -> None:
    def store(extractor: str, dim: int) -> BagStore:
        paths = {}
        for i in range(2):
            paths[f"s{i}"] = tmp_path / extractor / f"s{i}.h5"
            write_bag(paths[f"s{i}"], np.random.rand(4, dim), np.arange(8).reshape(4, 2) * PS,
                      {"extractor": extractor, "patch_size_level0": PS})
        return BagStore(paths, prefetch_workers=0)

    check_feature_source(TITAN, store("conch-v1.5", 768))
    with pytest.raises(DataError, match=r"'titan' loads weights trained on 'conch-v1.5' features \(768 wide\), but "
                       r"2 slide\(s\) have features from 'uni'.*--extractor conch-v1.5"):
        check_feature_source(TITAN, store("uni", 1024))


def test_grid_cells_round_coords_and_place_a_lone_patch_at_the_origin() -> None:
    noisy = torch.tensor([[1024.0, 512.0], [1535.99, 512.0], [2048.01, 1023.999]])
    assert grid_cells(noisy, None, who="titan", from_corner=True).tolist() == [[0, 0], [1, 0], [2, 1]]
    assert grid_cells(noisy[:1], None, who="titan", from_corner=False).tolist() == [[0, 0]]
    assert grid_cells(noisy, 256, who="titan", from_corner=False).tolist() == [[4, 2], [6, 2], [8, 4]]


def test_an_empty_bag_in_the_batch() -> None:
    model = TITAN(TITANConfig(**SMALL), in_dim=IN_DIM).eval()
    feats, coords = slide(3, 0)
    mask = torch.tensor([[True] * 3, [False] * 3])                              # slide 1 has no patch
    with torch.no_grad():
        out = model(feats[None].expand(2, -1, -1), mask, coords.float()[None].expand(2, -1, -1))
    assert torch.isfinite(out.embedding).all() and torch.isfinite(out.tokens).all()
    assert out.attention[1].abs().sum() == 0
