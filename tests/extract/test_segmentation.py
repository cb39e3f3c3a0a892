"""Tissue segmentation: synthetic images with known answers, real slides with sane tissue fractions."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from milkit.extract.qc import contours_geojson, save_geojson, save_overlay
from milkit.extract.segmentation import SegmentationParams, segment_image, segment_tissue
from milkit.slides import open_slide

PINK = (230, 150, 190)


def canvas() -> np.ndarray:
    """400 x 300 glass with a 200 x 160 tissue square holding a 60 x 60 hole, an island in the
    hole, and a 5-px speck."""
    img = np.full((300, 400, 3), 245, np.uint8)
    img[50:210, 50:250] = PINK
    img[100:160, 100:160] = 245                                         # hole
    img[115:145, 115:145] = PINK                                        # island inside the hole
    img[280:285, 380:385] = PINK                                        # speck
    return img


def test_contours_holes_and_area_filter() -> None:
    params = SegmentationParams(median_blur=1, close_px=0, min_area=1.0, min_hole_area=1.0)
    # scale 4: every mask px is 4 x 4 level-0 px; reference patch 80 level-0 px = 20 mask px
    seg = segment_image(canvas(), params, scale=(4.0, 4.0), ref_patch_px=80)
    assert seg.mask[60, 60] == 1 and seg.mask[110, 110] == 0             # tissue, hole
    assert seg.mask[130, 130] == 1                                       # island kept after the hole
    assert seg.mask[282, 382] == 0                                       # speck below min_area
    assert len(seg.contours) == 2 and [len(h) for h in seg.holes] == [1, 0]
    outer = seg.contours[0]
    assert outer[:, 0].min() == pytest.approx(50 * 4 + 2) and outer[:, 0].max() == pytest.approx(249 * 4 + 2)
    frac = seg.fraction_in_boxes(np.array([[240, 240], [404, 404], [1200, 900]]), 40)
    np.testing.assert_allclose(frac, [1.0, 0.0, 0.0], atol=1e-9)         # full tissue, hole, glass
    assert seg.fraction_in_boxes(np.array([[160, 400]]), 80)[0] == pytest.approx(0.5)   # straddles the edge


def test_small_holes_are_ignored_and_otsu_works() -> None:
    params = SegmentationParams(median_blur=1, close_px=0, min_area=1.0, min_hole_area=50.0, use_otsu=True)
    seg = segment_image(canvas(), params, scale=(1.0, 1.0), ref_patch_px=20)
    assert seg.holes == [[], []] and seg.mask[110, 110] == 1
    assert 0 <= seg.threshold < 88                                       # between glass and pink saturation


def test_real_slides_have_sane_tissue_fractions(shared_data: Path) -> None:
    expect = {"cmu-1-small-region.svs": (0.2, 0.7), "tcga-cr-7395-01a-01-ts1.svs": (0.45, 0.85)}
    for name, (lo, hi) in expect.items():
        with open_slide(shared_data / "wsi" / name) as r:
            seg = segment_tissue(r, SegmentationParams(), ref_patch_px=448)
            assert lo < seg.tissue_fraction < hi, (name, seg.tissue_fraction)
            w, h = r.dimensions
            pts = np.concatenate(seg.contours)
            assert (pts >= 0).all() and (pts[:, 0] <= w).all() and (pts[:, 1] <= h).all()
            assert 600 <= max(seg.mask.shape) <= 1100                    # ~1024-px mask for small slides


def test_qc_files(tmp_path: Path) -> None:
    seg = segment_image(canvas(), SegmentationParams(median_blur=1, close_px=0, min_area=1.0, min_hole_area=1.0),
                        scale=(4.0, 4.0), ref_patch_px=80)
    save_geojson(seg, tmp_path / "s.geojson")
    gj = json.loads((tmp_path / "s.geojson").read_text())
    assert gj == contours_geojson(seg) and len(gj["features"]) == 2
    rings = gj["features"][0]["geometry"]["coordinates"]
    assert len(rings) == 2 and all(r[0] == r[-1] for r in rings)       # exterior + hole, closed
    save_overlay(seg, tmp_path / "s.png", coords=np.array([[200, 200]]), patch_size_level0=80)
    img = cv2.imread(str(tmp_path / "s.png"))
    assert img.shape == (300, 400, 3)
    assert (img == (0, 0, 255)).all(-1).any() and (img == (0, 200, 0)).all(-1).any()   # tile red, contour green
