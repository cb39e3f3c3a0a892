"""Tile grid: level-0 coordinates, tissue filter, pyramid level choice and block reads."""

from pathlib import Path

import numpy as np
import pytest

from milkit.errors import DataError
from milkit.extract.segmentation import segment_tissue
from milkit.extract.settings import ExtractionSettings
from milkit.extract.tiling import make_blocks, plan_tiles, read_block, resize_tile, resolve_resolution
from milkit.slides import open_slide


def plan_for(path: Path, **kw):
    settings = ExtractionSettings(**kw)
    reader = open_slide(path, mpp_override=settings.mpp_override)
    res = resolve_resolution(reader, settings)
    seg = segment_tissue(reader, settings.segmentation_params(), ref_patch_px=res.patch_size_level0)
    return reader, seg, plan_tiles(reader, seg, settings, res), settings


def test_resolution_from_mpp_or_magnification(shared_data: Path) -> None:
    with open_slide(shared_data / "wsi" / "cmu-1-small-region.svs") as r:          # 0.499 um/px, 20x
        res = resolve_resolution(r, ExtractionSettings(target_mpp=0.5))
        assert res.patch_size_level0 == 224 and res.downsample == pytest.approx(0.5 / 0.499)
        res = resolve_resolution(r, ExtractionSettings(target_magnification=10, tile_size_px=256))
        assert res.downsample == 2.0 and res.patch_size_level0 == 512 and res.target_mpp == pytest.approx(0.998)


def test_missing_mpp_says_how_to_fix(shared_data: Path) -> None:
    with open_slide(shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs") as r:
        with pytest.raises(DataError, match=r"tcga-cr-7395-01a-01-ts1 has no level-0 mpp.*mpp_override"):
            resolve_resolution(r, ExtractionSettings())
        with pytest.raises(DataError, match="cannot be resolved"):
            resolve_resolution(r, ExtractionSettings(target_magnification=20))


def test_grid_is_level0_inside_tissue_and_row_major(synthetic_slide: Path) -> None:
    reader, seg, plan, s = plan_for(synthetic_slide, target_mpp=1.0, tile_size_px=64, stride_px=48,
                                    seg_min_area=1.0)
    ps, step = plan.resolution.patch_size_level0, plan.resolution.stride_level0
    assert (ps, step) == (128, 96) and len(plan) > 10
    assert (plan.coords % step == 0).all()
    w, h = reader.dimensions
    assert (plan.coords.min(0) >= 0).all()
    assert (plan.coords[:, 0] + ps <= w).all() and (plan.coords[:, 1] + ps <= h).all()
    assert (plan.tissue >= s.min_tissue_fraction).all()
    np.testing.assert_allclose(seg.fraction_in_boxes(plan.coords, ps), plan.tissue)
    keys = plan.coords[:, 1] * 10**6 + plan.coords[:, 0]
    assert (np.diff(keys) > 0).all()
    everything = plan_for(synthetic_slide, target_mpp=1.0, tile_size_px=64, stride_px=48, min_tissue_fraction=0)[2]
    assert len(everything) == ((1024 - 128) // 96 + 1) * ((768 - 128) // 96 + 1)


def test_reads_come_from_the_best_level(synthetic_slide: Path) -> None:
    reader, _, plan, _ = plan_for(synthetic_slide, target_mpp=1.5, tile_size_px=32, seg_min_area=1.0)
    assert plan.level == 1 and plan.level_downsample == 2.0 and plan.read_size == 48   # 96 level-0 px / 2


def test_block_reads_equal_per_tile_reads(synthetic_slide: Path) -> None:
    reader, _, plan, _ = plan_for(synthetic_slide, target_mpp=0.5, tile_size_px=64, seg_min_area=1.0)
    blocks = make_blocks(plan, 2)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(len(plan)))
    for b in blocks:
        cells = plan.coords[b] // (plan.resolution.stride_level0 * 2)
        assert (cells == cells[0]).all()                                  # one 2 x 2 grid block each
    assert any(len(b) == 4 for b in blocks) and any(len(b) < 4 for b in blocks)   # dense and sparse paths
    for idx in blocks:
        got = read_block(reader, plan, idx, (32, 20))                    # one read, two sizes
        for k, (x, y) in enumerate(plan.coords[idx]):
            tile = reader.read_region(int(x), int(y), plan.level, plan.read_size, plan.read_size)
            for px in (32, 20):
                np.testing.assert_array_equal(got[px][k], resize_tile(tile, px))
