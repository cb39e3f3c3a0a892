"""Prov-GigaPath slide encoder: the published size and LongNet numbers, the slide_encoder.pth key layout,
parity (outputs and gradients) with the reference forward, padding, dilated-attention corner cases, the
conformance kit, the feature check."""

from pathlib import Path

import numpy as np
import pytest
import torch

from milkit.components.aggregators.gigapath_slide import GigaPathSlide, GigaPathSlideConfig
from milkit.data.bags import BagStore
from milkit.data.feature_check import check_feature_source
from milkit.data.feature_formats import write_bag
from milkit.errors import CheckpointError, DataError
from milkit.testing import check_aggregator
import _reference_gigapath_slide as ref

IN_DIM, GRID, TILE = 24, 16, 256
LONGNET = {"segment_lengths": [4, 8, 16], "dilations": [1, 2, 4]}
SMALL = {"embed_dim": 32, "depth": 3, "num_heads": 4, "ffn_dim": 64, "slide_ngrids": GRID, "feat_layer": 2, **LONGNET}
ODD = {"segment_lengths": [5, 7, 32], "dilations": [1, 3, 8]}   # segments not multiples of r; r > heads (padding)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference(longnet: dict = LONGNET, *, global_pool: bool = False) -> ref.LongNetViT:
    torch.manual_seed(0)
    model = ref.LongNetViT(in_chans=IN_DIM, embed_dim=32, depth=3, slide_ngrids=GRID, tile_size=TILE, heads=4,
                           ffn_dim=64, dilated_ratio=longnet["dilations"], segment_length=longnet["segment_lengths"],
                           global_pool=global_pool, dropout=0.0, drop_path_rate=0.0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def published_file(tmp_path: Path, model: ref.LongNetViT) -> Path:
    """As huggingface.co/prov-gigapath/prov-gigapath distributes it: ``{"model": LongNetViT state dict}``."""
    path = tmp_path / "slide_encoder.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def ours_like(theirs: ref.LongNetViT, **cfg) -> GigaPathSlide:
    model = GigaPathSlide(GigaPathSlideConfig(**{**SMALL, "dropout": 0.0, **cfg}), in_dim=IN_DIM).eval()
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in theirs.state_dict().items() if k in own})
    return model


def slide(n: int, seed: int, step: int = TILE) -> tuple[torch.Tensor, torch.Tensor]:
    """feats [n, D] and level-0 coords [n, 2] (float) of distinct grid cells in scan order (y outer, x inner);
    the first two are neighbours, so the grid step can be read off the coords."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.cat([torch.tensor([0, 1]), 2 + torch.randperm(GRID * GRID - 2, generator=gen)])[:n].sort().values
    coords = torch.stack([cells % GRID, cells // GRID], 1).float() * step                   # (x, y)
    return torch.randn(n, IN_DIM, generator=gen), coords


def run_reference(theirs: ref.LongNetViT, feats, coords, feat_layer: int | None) -> torch.Tensor:
    outs = theirs(feats[None], coords[None], all_layer_embed=feat_layer is not None)
    return outs[feat_layer] if feat_layer is not None else outs[0]


def test_defaults_are_the_published_model() -> None:
    """gigapath_slide_enc12l768d: 12 LongNet layers, 768 wide, 16 heads, FFN 3072, segment lengths of
    get_optimal_segment_length(262144, 256) with dilations 1..16. The reference code builds 86,330,880
    parameters (no first-hand published count found; slide2vec's README says 87M); the default reads layer 11
    (the authors' fine-tuning), so layer 12 and the encoder's final LayerNorm are not built."""
    with torch.device("meta"):
        full, ours = GigaPathSlide(GigaPathSlideConfig(feat_layer=None), in_dim=1536), GigaPathSlide(
            GigaPathSlideConfig(), in_dim=1536)
        theirs = ref.LongNetViT(slide_ngrids=1)                     # the grid only sizes a buffer
    assert count(full) == count(theirs) == 86_330_880 and round(count(full) / 1e6) == 86
    assert count(ours) == 86_330_880 - count(theirs.encoder.layers[11]) - 2 * 768 == 79_233_792
    c = ours.config
    assert c.segment_lengths == theirs.get_optimal_segment_length(262144, 256) == [1024, 5792, 32768, 185363, 1048576]
    assert (c.dilations, c.num_heads, c.ffn_dim, c.slide_ngrids, c.feat_layer, c.global_pool) == (
        [1, 2, 4, 8, 16], 16, 3072, 1000, 11, False)
    assert (c.dropout, c.drop_path_rate, ours.out_dim) == (0.1, 0.0, 768) and not GigaPathSlide.permutation_invariant
    assert GigaPathSlide.expected_features.encoders == ("gigapath",) and GigaPathSlide.expected_features.dim == 1536


@pytest.mark.parametrize(("feat_layer", "global_pool"), [(None, False), (2, False), (3, True)])
def test_the_published_key_layout_loads_and_reproduces_the_reference(tmp_path, feat_layer, global_pool) -> None:
    theirs = reference(global_pool=global_pool)
    config = GigaPathSlideConfig(**{**SMALL, "feat_layer": feat_layer}, weights=published_file(tmp_path, theirs),
                                 global_pool=global_pool, patch_size_level0=TILE)
    ours = GigaPathSlide(config, in_dim=IN_DIM).eval()
    assert ours.weights_sha256 is not None and len(ours.encoder["layers"]) == (feat_layer or 3)
    for n, seed in ((1, 0), (3, 1), (15, 2), (40, 3)):                 # 1 + n tokens: 1..4 segments
        feats, coords = slide(n, seed)
        with torch.no_grad():
            want = run_reference(theirs, feats, coords, feat_layer)
            got = ours(feats[None], torch.ones(1, n, dtype=torch.bool), coords[None]).embedding
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_a_wrong_file_names_the_keys(tmp_path: Path) -> None:
    state = reference().state_dict()
    state = {k.replace("encoder.layers.0.ffn.", "encoder.layers.0.mlp."): v for k, v in state.items()}
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: encoder\.layers\.0\.ffn\.fc1\.bias.*unexpected keys: "
                       r"encoder\.layers\.0\.mlp\.fc1\.bias.*expects slide_encoder\.pth of huggingface\.co/"):
        GigaPathSlide(GigaPathSlideConfig(**SMALL, weights=tmp_path / "bad.pth"), in_dim=IN_DIM)


@pytest.mark.parametrize("longnet", [LONGNET, ODD])
def test_parity_in_padded_batches_with_the_grid_step_read_off_the_coords(longnet: dict) -> None:
    """Junk in the padding; a 40x slide (512-px steps) in the batch is read as the reference at tile_size 512."""
    theirs = reference(longnet)
    ours = ours_like(theirs, **longnet, feat_layer=None)
    bags = [slide(37, 4), slide(6, 5), slide(20, 6, step=2 * TILE), slide(2, 7)]
    n = 40
    feats, coords = torch.randn(len(bags), n, IN_DIM) * 10 + 3, torch.rand(len(bags), n, 2) * 1e5
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, (f, c) in enumerate(bags):
        feats[i, : len(f)], coords[i, : len(f)], mask[i, : len(f)] = f, c, True
    with torch.no_grad():
        out = ours(feats, mask, coords)
        for i, (f, c) in enumerate(bags):
            theirs.tile_size = 2 * TILE if i == 2 else TILE
            torch.testing.assert_close(out.embedding[i], run_reference(theirs, f, c, None)[0], atol=1e-5, rtol=0)
    assert out.attention is None


def test_gradients_match_the_reference() -> None:
    """The branches are mixed with weights computed without gradient, as torchscale's scattering does."""
    theirs = reference(ODD)
    ours = ours_like(theirs, **ODD, feat_layer=2, patch_size_level0=TILE)
    feats, coords = slide(30, 8)
    run_reference(theirs, feats, coords, 2).square().sum().backward()
    ours(feats[None], torch.ones(1, 30, dtype=torch.bool), coords[None]).embedding.square().sum().backward()
    for name, p in ours.named_parameters():                                       # gradients of order 1
        torch.testing.assert_close(p.grad, theirs.get_parameter(name).grad, atol=1e-5, rtol=1e-5, msg=name)


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(GigaPathSlide, SMALL)
    check_aggregator(GigaPathSlide, {**SMALL, **ODD, "feat_layer": None, "global_pool": True, "drop_path_rate": 0.2})
    assert registries.aggregators.get("gigapath-slide") is GigaPathSlide


def test_coords_all_at_one_place_are_refused() -> None:
    model = GigaPathSlide(GigaPathSlideConfig(**SMALL), in_dim=IN_DIM).eval()
    with pytest.raises(DataError, match="'gigapath-slide' places patches on the slide's tile grid"):
        model(torch.randn(1, 3, IN_DIM), torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 3, 2))


def test_the_feature_check_refuses_features_of_another_extractor(tmp_path: Path) -> None:
    def store(extractor: str, dim: int) -> BagStore:
        paths = {f"s{i}": tmp_path / extractor / f"s{i}.h5" for i in range(2)}
        for path in paths.values():
            write_bag(path, np.random.rand(4, dim), np.arange(8).reshape(4, 2) * TILE, {"extractor": extractor})
        return BagStore(paths, prefetch_workers=0)

    check_feature_source(GigaPathSlide, store("gigapath", 1536))
    with pytest.raises(DataError, match=r"'gigapath-slide' loads weights trained on 'gigapath' features \(1536 wide\)"
                       r".*from 'conch-v1.5'.*--extractor gigapath"):
        check_feature_source(GigaPathSlide, store("conch-v1.5", 768))


def test_an_empty_bag_in_the_batch() -> None:
    model = GigaPathSlide(GigaPathSlideConfig(**SMALL, global_pool=True), in_dim=IN_DIM).eval()
    feats, coords = slide(3, 0)
    with torch.no_grad():
        out = model(feats[None].expand(2, -1, -1), torch.tensor([[True] * 3, [False] * 3]),
                    coords[None].expand(2, -1, -1))
    assert torch.isfinite(out.embedding).all()
