"""render_heatmap: scores land on the pixels of their patches, on a blank canvas and on a real slide."""

import numpy as np
import pytest
from vizhelpers import assert_sensible_png, png_array

from milkit.errors import DataError
from milkit.viz.heatmap import infer_patch_size, normalise_scores, rasterise, render_heatmap


def test_rasterise_places_each_patch_on_its_own_pixels():
    coords = np.array([[0, 0], [100, 0], [0, 100]])
    grid, covered = rasterise(coords, np.array([1.0, 2.0, 3.0]), 100, (0.1, 0.1), (20, 20))
    assert (grid[:10, :10] == 1).all() and (grid[:10, 10:] == 2).all() and (grid[10:, :10] == 3).all()
    assert covered[:10, :20].all() and covered[10:, :10].all() and not covered[10:, 10:].any()
    assert (grid[~covered] == 0).all()


def test_rasterise_averages_overlaps_and_clips_to_the_canvas():
    coords = np.array([[0, 0], [50, 0], [150, 150], [5000, 5000]])       # 2 overlap, 1 half out, 1 outside
    grid, covered = rasterise(coords, np.array([1.0, 3.0, 5.0, 9.0]), 100, (0.1, 0.1), (20, 20))
    assert np.allclose(grid[0, :5], 1) and np.allclose(grid[0, 5:10], 2) and np.allclose(grid[0, 10:15], 3)
    assert np.allclose(grid[15:, 15:], 5) and covered.sum() == 15 * 10 + 5 * 5
    assert grid.max() < 9  # the patch outside the canvas is ignored


def test_rasterise_keeps_patches_smaller_than_a_pixel():
    coords = np.array([[0, 0], [10, 0], [1000, 1000]])                  # two patches share pixel (0, 0)
    grid, covered = rasterise(coords, np.array([1.0, 3.0, 7.0]), 10, (0.01, 0.01), (12, 12))
    assert covered.sum() == 2 and grid[0, 0] == pytest.approx(2.0) and grid[10, 10] == pytest.approx(7.0)


def test_normalise_scores_percentile_and_minmax():
    s = np.array([1e-6, 5e-6, 0.9, 2e-6])
    assert normalise_scores(s).tolist() == pytest.approx([0, 2 / 3, 1, 1 / 3])
    assert normalise_scores(s, "minmax").max() == 1 and normalise_scores(s, "minmax").min() == 0
    assert normalise_scores(np.ones(3), "minmax").tolist() == [0.5, 0.5, 0.5]
    assert normalise_scores(np.array([2.0, 2.0]), "percentile").tolist() == [0.5, 0.5]  # ties share a rank


def test_infer_patch_size_from_grid():
    assert infer_patch_size(np.array([[0, 0], [512, 0], [1024, 256], [0, 768]])) == 256


def _grid(n: int = 10, ps: int = 256) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.arange(n), np.arange(n))
    coords = np.stack([gx.ravel(), gy.ravel()], 1) * ps
    scores = np.where((gx.ravel() < 3) & (gy.ravel() < 3), 0.5, 0.001)  # hot block in the top-left
    return coords, scores + np.random.default_rng(0).random(n * n) * 1e-4


def test_high_scores_are_drawn_where_their_patches_are(tmp_path):
    coords, scores = _grid()
    res = render_heatmap(None, coords, scores, 256, tmp_path / "h.png", width=400, top_k=3)
    ov = res.overlay.astype(int)
    assert ov.shape == (400, 400, 3) and res.scale == pytest.approx((400 / 2560, 400 / 2560))
    hot = ov[10:110, 10:110].reshape(-1, 3)                               # inside the 3 x 3 hot block
    assert (hot[:, 0] - hot[:, 2] > 50).all()                             # jet, top percentiles: red over white
    x, y = (coords[np.argmin(scores)] * 400 / 2560 + 20).astype(int)      # centre of the lowest patch
    assert ov[y, x, 2] - ov[y, x, 0] > 40, ov[y, x]                       # jet, percentile 0: blue over white
    flat = render_heatmap(None, coords, scores, 256, tmp_path / "m.png", width=400, top_k=0, normalise="minmax")
    cold = flat.overlay.astype(int)[130:, 130:].reshape(-1, 3)            # every other patch, min-max scaled
    assert (cold[:, 2] - cold[:, 0] > 40).all()
    assert not res.slide_available and any("blank canvas" in n for n in res.notes)
    assert res.tiles_png is None and any("tiles need the slide" in n for n in res.notes)
    assert [t[2] for t in res.top] == sorted(scores, reverse=True)[:3]
    img = assert_sensible_png(res.png)
    left, top, w, h = res.overlay_box
    assert np.array_equal(img[top:top + h, left:left + w], res.overlay)  # drawn pixel for pixel
    assert img.shape[1] > w + 50                                          # room for the colour bar


def test_real_slide_background_and_top_tiles(tmp_path, shared_data):
    slide = shared_data / "wsi" / "cmu-1-small-region.svs"                # 2220 x 2967 px, one level
    coords, scores = _grid(n=6, ps=200)
    res = render_heatmap(slide, coords, scores, 200, tmp_path / "h.png", width=500, top_k=2)
    assert res.slide_available and res.overlay.shape[1] == 500
    from milkit.slides import open_slide

    thumb = open_slide(slide).read_downsampled(2220 / 500)
    assert np.array_equal(res.overlay[600:, 300:], thumb[600:, 300:])     # no patch there: slide untouched
    assert not np.array_equal(res.overlay[:100, :100], thumb[:100, :100])  # hot block: coloured over
    strip = assert_sensible_png(res.tiles_png, min_side=100)
    assert strip.shape[1] >= 2 * 192 and len(res.top) == len(res.bottom) == 2
    assert [t[:2] for t in res.bottom] != [t[:2] for t in res.top]


def test_level_option_and_its_errors(tmp_path, shared_data):
    slide = shared_data / "wsi" / "small_HE_levels.tiff"
    from milkit.slides import open_slide

    reader = open_slide(slide)
    coords, scores = _grid(n=4, ps=16)
    res = render_heatmap(slide, coords, scores, 16, tmp_path / "l.png", level=reader.level_count - 1, top_k=0)
    assert res.overlay.shape[1] == reader.level_dimensions[-1][0]
    with pytest.raises(DataError, match="level 9 does not exist"):
        render_heatmap(slide, coords, scores, 16, tmp_path / "x.png", level=9)


def test_bad_inputs_are_reported(tmp_path):
    coords, scores = _grid()
    with pytest.raises(DataError, match="one score per patch"):
        render_heatmap(None, coords, scores[:-1], 256, tmp_path / "x.png")
    with pytest.raises(DataError, match="too large"):
        render_heatmap(None, coords, scores, 256, tmp_path / "x.png", width=40000)
    res = render_heatmap(tmp_path / "missing.svs", coords, scores, None, tmp_path / "m.png", width=300, top_k=0)
    assert any("slide file unavailable" in n for n in res.notes) and any("inferred 256" in n for n in res.notes)
    assert png_array(res.png).shape[0] >= 300


class _CountingReader:
    """A stand-in slide reader that records whether it was closed."""

    dimensions = (448, 448)
    level_count = 1
    level_downsamples = (1.0,)

    def __init__(self, fail_read: bool = False) -> None:
        self.closed, self.fail_read = False, fail_read

    def read_downsampled(self, ds: float) -> np.ndarray:
        if self.fail_read:
            raise DataError("corrupt tile")
        return np.full((int(448 / ds), int(448 / ds), 3), 200, dtype=np.uint8)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("kwargs", "fail_read", "raises"), [
    ({"level": 3}, False, "level 3 does not exist"),          # refused after opening
    ({"level": 0, "dimensions": (10**6, 10**6)}, False, "too large"),  # refused after opening
    ({}, True, "corrupt tile"),                             # the read itself fails
    ({"top_k": 0}, False, None),                            # no tile strip: closed all the same
    ({"cmap": "jet"}, False, None),                         # the normal path
])
def test_the_slide_reader_is_closed_on_every_path(tmp_path, monkeypatch, kwargs, fail_read, raises):
    import milkit.slides

    reader = _CountingReader(fail_read)
    reader.dimensions = kwargs.pop("dimensions", reader.dimensions)
    monkeypatch.setattr(milkit.slides, "open_slide", lambda path: reader)
    monkeypatch.setattr("milkit.viz.tiles.save_tile_strip", lambda *a, **k: None)
    coords = np.array([[0, 0], [224, 0], [0, 224], [224, 224]])
    args = (tmp_path / "slide.svs", coords, np.arange(4.0), 224, tmp_path / "h.png")
    if raises:
        with pytest.raises(DataError, match=raises):
            render_heatmap(*args, **kwargs)
    else:
        render_heatmap(*args, **kwargs)
    assert reader.closed
