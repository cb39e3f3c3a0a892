"""The tiff-tiles reader decodes TIFF tiles itself and must give OpenSlide's pixels exactly."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from milkit.errors import DataError
from milkit.slides import open_slide

REAL = ("cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "small_HE_levels.tiff",
        "openslide-python-boxes.tiff", "openslide-python-small.svs")


def regions(dims: tuple[int, int], ds: float, n: int, seed: int) -> list[tuple[int, int, int, int]]:
    """Random regions (x0, y0, w, h) whose corner lies on the level's grid, some past the edges."""
    rng = np.random.default_rng(seed)
    w0, h0 = dims
    out = []
    for _ in range(n):
        lx, ly = rng.integers(-20, w0 / ds), rng.integers(-20, h0 / ds)
        out.append((int(round(lx * ds)), int(round(ly * ds)), int(rng.integers(1, 300)), int(rng.integers(1, 300))))
    return out


def assert_same_as_openslide(path: Path) -> None:
    with open_slide(path) as fast, open_slide(path, reader="openslide") as ref:
        assert fast.backend == "tiff-tiles" and fast.decoded_levels == list(range(ref.level_count))
        assert (fast.level_dimensions, fast.level_downsamples, fast.mpp, fast.magnification) == \
            (ref.level_dimensions, ref.level_downsamples, ref.mpp, ref.magnification)
        for level, ds in enumerate(ref.level_downsamples):
            # where the downsample is not an integer a level-0 corner falls between the level's pixels:
            # OpenSlide interpolates there and this reader snaps to the nearest pixel
            dims = zip(ref.dimensions, ref.level_dimensions[level], strict=True)
            on_grid = ds == round(ds) and all(d0 == d * ds for d0, d in dims)
            for x, y, w, h in regions(ref.dimensions, ds, 12, level):
                a, b = fast.read_region(x, y, level, w, h), ref.read_region(x, y, level, w, h)
                if on_grid:
                    np.testing.assert_array_equal(a, b, err_msg=f"{path.name} level {level} at ({x}, {y}) {w}x{h}")
                else:
                    assert np.abs(a.astype(int) - b).mean() < 12, f"{path.name} level {level} at ({x}, {y})"


@pytest.mark.parametrize("name", REAL)
def test_real_slides_read_exactly_as_openslide(shared_data: Path, name: str) -> None:
    assert_same_as_openslide(shared_data / "wsi" / name)


def write_pyramid(path: Path, *, photometric: str, compression: str, levels: int = 3, size: int = 700) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(180, 40, (size // 8, size // 8, 3)), 0, 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    img = np.ascontiguousarray(img[:size, : size - 36])     # edge tiles are partial; levels halve exactly
    with tifffile.TiffWriter(path) as tif:
        level = img
        for i in range(levels):
            tif.write(level, tile=(128, 128), photometric=photometric, compression=compression,
                      resolution=(1e4 / (0.5 * 2**i),) * 2, resolutionunit="CENTIMETER",
                      subfiletype=1 if i else 0)
            level = np.ascontiguousarray(level[::2, ::2])
    return img


@pytest.mark.parametrize("photometric,compression", [("rgb", "jpeg"), ("ycbcr", "jpeg"), ("rgb", "zlib"),
                                                     ("rgb", "lzw"), ("rgb", None)])
def test_generated_tiffs_read_exactly_as_openslide(tmp_path: Path, photometric: str, compression: str | None) -> None:
    path = tmp_path / "s.tiff"
    img = write_pyramid(path, photometric=photometric, compression=compression)
    assert_same_as_openslide(path)
    if compression != "jpeg":                                                # lossless: the pixels written
        with open_slide(path) as r:
            np.testing.assert_array_equal(r.read_region(0, 0, 0, img.shape[1], img.shape[0]), img)


def test_levels_it_cannot_decode_go_through_openslide(tmp_path: Path) -> None:
    path = tmp_path / "s.tiff"
    write_pyramid(path, photometric="rgb", compression="packbits", levels=2)
    with open_slide(path) as fast, open_slide(path, reader="openslide") as ref:
        assert fast.backend == "tiff-tiles" and fast.decoded_levels == []
        np.testing.assert_array_equal(fast.read_region(64, 96, 1, 100, 80), ref.read_region(64, 96, 1, 100, 80))


def test_decoded_tiles_are_reused_and_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from milkit.slides import tiff_tiles_reader

    path = tmp_path / "s.tiff"
    write_pyramid(path, photometric="rgb", compression="zlib", levels=1)
    with open_slide(path) as r:
        r.read_region(0, 0, 0, 256, 256)
        assert len(r._cache) == 4
        first = r._cache[(0, 0)]
        r.read_region(10, 10, 0, 100, 100)                                  # same tile: not decoded again
        assert r._cache[(0, 0)] is first
        monkeypatch.setattr(tiff_tiles_reader, "TILE_CACHE_MB", 0)
        r.read_region(0, 0, 0, 600, 600)
        assert len(r._cache) == 1                                            # only the newest kept


def test_a_corrupt_tile_is_a_dataerror_naming_the_file_and_tile(tmp_path: Path) -> None:
    path = tmp_path / "s.tiff"
    write_pyramid(path, photometric="rgb", compression="zlib", levels=2)
    with tifffile.TiffFile(path) as tif:
        offset, count = int(tif.pages[0].dataoffsets[5]), int(tif.pages[0].databytecounts[5])
    data = bytearray(path.read_bytes())
    data[offset: offset + count] = b"\xff" * count                            # tile 5 of level 0 is garbage
    path.write_bytes(bytes(data))
    with open_slide(path, reader="tiff-tiles") as r:
        assert r.read_region(0, 0, 0, 128, 128).shape == (128, 128, 3)        # intact tiles still read
        with pytest.raises(DataError, match=r"tile 5 of level 0 in .*s\.tiff .*truncated or corrupt"):
            r.read_region(0, 0, 0, *r.dimensions)
