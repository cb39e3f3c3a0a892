"""Heatmap image, top-k, colour stops, tissue polygons (milkit/view/overlays.py)."""

import numpy as np
import pytest

from milkit.errors import DataError
from milkit.view.overlays import (
    PatchScores,
    colour_stops,
    overlay_rgba,
    overlay_shape,
    tissue_polygons,
    top_patches,
)


def grid_layer(peak: tuple[int, int] = (3, 1)) -> PatchScores:
    """A 6 x 4 grid of 100 px patches starting at (50, 20), scores rising to one peak."""
    xs, ys = np.meshgrid(np.arange(6), np.arange(4))
    coords = np.stack([xs.ravel() * 100 + 50, ys.ravel() * 100 + 20], 1).astype(float)
    scores = -np.hypot(xs.ravel() - peak[0], ys.ravel() - peak[1])
    return PatchScores(coords, scores, 100.0, "test")


def test_overlay_is_level0_aligned_and_transparent_off_tissue():
    layer = grid_layer()
    rgba = overlay_rgba(layer, 1000, 500, cmap="jet")
    assert rgba.shape == (500, 1000, 4)                       # smaller than max_px: one pixel per level-0 px
    assert (rgba[:20, :, 3] == 0).all() and (rgba[:, :50, 3] == 0).all() and (rgba[:, 650:, 3] == 0).all()
    assert (rgba[20:420, 50:650, 3] == 255).all()
    peak = rgba[120 + 50, 350 + 50, :3].astype(int)           # centre of the patch at grid (3, 1)
    assert peak[0] > 100 and peak[2] < 60                     # jet's top end is dark red
    low = rgba[320 + 50, 50 + 50, :3].astype(int)             # farthest patch, grid (0, 3)
    assert low[2] > 100 and low[0] < 60                       # jet's bottom end is dark blue


def test_overlay_of_a_big_slide_is_bounded_and_keeps_the_aspect():
    layer = PatchScores(np.array([[50_000.0, 20_000.0]]), np.array([1.0]), 256.0, "one")
    assert overlay_shape(100_000, 40_000) == (819, 2048)
    rgba = overlay_rgba(layer, 100_000, 40_000)
    assert rgba.shape == (819, 2048, 4)
    ys, xs = np.nonzero(rgba[..., 3])
    assert xs.min() == round(50_000 * 2048 / 100_000) and ys.min() == round(20_000 * 819 / 40_000)


def test_percentile_and_minmax_differ_for_a_peaky_softmax():
    layer = PatchScores(np.array([[0, 0], [100, 0], [200, 0]], float), np.array([0.98, 0.01, 0.011]), 100.0, "p")
    pct = overlay_rgba(layer, 300, 100, cmap="viridis", normalise="percentile")
    mm = overlay_rgba(layer, 300, 100, cmap="viridis", normalise="minmax")
    assert not np.array_equal(pct[50, 250], mm[50, 250])      # mid rank vs near the minimum


def test_top_patches_best_first():
    top = top_patches(grid_layer((4, 2)), 3)
    assert [(p["x"], p["y"]) for p in top[:1]] == [(450.0, 220.0)]
    assert [p["rank"] for p in top] == [0, 1, 2] and top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert top_patches(grid_layer(), 0) == []


def test_colour_stops_and_unknown_colour_maps():
    stops = colour_stops("viridis", 5)
    assert len(stops) == 5 and stops[0] == "#440154" and stops[-1] == "#fde725"
    with pytest.raises(DataError, match="unknown colour map 'nope'"):
        colour_stops("nope")


def test_tissue_polygons_read_the_segmentation_geojson(tmp_path):
    from viewhelpers import write_tissue

    write_tissue(tmp_path / "feats", "s1", (10, 20, 300, 400))
    polygons, source = tissue_polygons([tmp_path / "missing", tmp_path / "feats"], "s1")
    assert source.endswith("segmentation/s1.geojson") and len(polygons) == 1
    outer, hole = polygons[0]
    assert outer[0] == [10, 20] and outer[2] == [300, 400] and len(hole) == 4
    assert tissue_polygons([tmp_path / "feats"], "other") == ([], None)
