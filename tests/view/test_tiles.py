"""Deep Zoom tiles (milkit/view/tiles.py): OpenSlide's DeepZoomGenerator geometry, its pixels, bounded reads."""

import numpy as np
import pytest
from viewhelpers import write_slide

from milkit.errors import DataError
from milkit.slides import open_slide
from milkit.view.blank import BlankSlide
from milkit.view.tiles import DeepZoom, ReaderPool, dz_dimensions


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("tiles") / "slide.tiff", 1500, 1100, seed=1)


@pytest.fixture(params=[2048, 128], ids=["base-pyramid-2048", "base-pyramid-128"])
def dz(request, slide):
    d = DeepZoom(ReaderPool(lambda: open_slide(slide)), base_px=request.param)
    yield d
    d.pool.close()


def test_dimensions_halve_rounding_up():
    assert dz_dimensions(5, 3) == [(1, 1), (2, 1), (3, 2), (5, 3)]
    assert dz_dimensions(1, 1) == [(1, 1)]


def test_geometry_and_pixels_match_openslide_deepzoom(dz, slide):
    from openslide import OpenSlide
    from openslide.deepzoom import DeepZoomGenerator

    with OpenSlide(str(slide)) as osr:
        ref = DeepZoomGenerator(osr, tile_size=254, overlap=1, limit_bounds=False)
        assert dz.level_count == ref.level_count
        assert dz.level_dims == list(ref.level_dimensions)
        for level in range(dz.level_count):
            assert dz.tiles_across(level) == ref.level_tiles[level]
            cols, rows = ref.level_tiles[level]
            for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
                mine = dz.tile(level, col, row)
                _, _, w, h = dz.tile_box(level, col, row)
                assert mine.shape == (h, w, 3)
                theirs = np.asarray(ref.get_tile(level, (col, row)).convert("RGB"))
                # OpenSlide shrinks with PIL's thumbnail(), which keeps the aspect ratio and can lose a pixel
                assert abs(theirs.shape[0] - h) <= 1 and abs(theirs.shape[1] - w) <= 1, (level, col, row)
                if min(h, w) >= 32 and theirs.shape == mine.shape:
                    diff = np.abs(mine.astype(int) - theirs).mean()
                    assert diff < (1.0 if level == dz.level_count - 1 else 8.0), (level, col, row, diff)   # resampling differs


def test_coarse_levels_come_from_the_small_pyramid(slide):
    reads = []

    class Counting:
        def __init__(self):
            self.r = open_slide(slide)

        def __getattr__(self, name):
            return getattr(self.r, name)

        def read_region(self, *args):
            reads.append(args)
            return self.r.read_region(*args)

    d = DeepZoom(ReaderPool(Counting), base_px=512)
    d.tile(d.base_level, 0, 0)
    first = len(reads)
    assert first > 0
    for level in range(d.base_level + 1):                    # every coarse tile afterwards: no slide read
        cols, rows = d.tiles_across(level)
        for c in range(cols):
            for r in range(rows):
                d.tile(level, c, r)
    assert len(reads) == first
    d.tile(d.level_count - 1, 2, 2)                          # a fine tile reads about one tile's worth
    _, _, lv, w, h = reads[-1]
    assert lv == 0 and w <= 256 and h <= 256
    d.pool.close()


def test_a_fine_tile_is_read_from_the_best_pyramid_level(dz):
    reader = dz.pool.first
    level = dz.level_count - 3                                # downsample 4: the slide's 4x level
    x, y, w, h = dz.tile_box(level, 0, 0)
    assert reader.best_level_for_downsample(dz.downsample(level)) == 1
    tile = dz.tile(level, 0, 0)
    expected = reader.read_region(0, 0, 1, w, h)
    assert np.abs(tile.astype(int) - expected).mean() < 0.5 or level <= dz.base_level


def test_unknown_tiles_are_refused(dz):
    with pytest.raises(DataError, match="level 99 does not exist"):
        dz.tile(99, 0, 0)
    cols, rows = dz.tiles_across(dz.level_count - 1)
    with pytest.raises(DataError, match=f"tile \\({cols}, 0\\) does not exist"):
        dz.tile(dz.level_count - 1, cols, 0)


def test_dzi_descriptor(dz):
    xml = dz.dzi()
    assert 'TileSize="254"' in xml and 'Overlap="1"' in xml and '<Size Width="1500" Height="1100"/>' in xml


def test_blank_slide_is_white_and_cheap_at_any_size():
    d = DeepZoom(ReaderPool(lambda: BlankSlide("x", 200_000, 150_000), size=1))
    assert (d.width, d.height) == (200_000, 150_000)
    tile = d.tile(d.level_count - 1, 3, 5)
    assert tile.shape == (256, 256, 3) and (tile == 255).all()
    assert (d.tile(d.base_level, 0, 0) == 255).all()


def test_pool_lends_each_reader_to_one_thread(slide):
    import threading

    opened, in_use, clash = [], set(), []

    def make():
        r = open_slide(slide)
        opened.append(r)
        return r

    pool = ReaderPool(make, size=2)

    def work():
        for _ in range(20):
            with pool.reader() as r:
                if id(r) in in_use:
                    clash.append(r)
                in_use.add(id(r))
                r.read_region(0, 0, 0, 64, 64)
                in_use.discard(id(r))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clash == [] and len(opened) <= 2
    pool.close()
    with pytest.raises(DataError, match="was closed"):
        with pool.reader():
            pass
