"""Slide readers on the real slides in shared/data/wsi and on small generated images."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from milkit.errors import DataError
from milkit.slides import open_slide, slide_id_from_path

EXPECTED = {  # file: (backend, level-0 (w, h), level count, mpp, magnification)
    "cmu-1-small-region.svs": ("tiff-tiles", (2220, 2967), 1, 0.499, 20.0),
    "tcga-cr-7395-01a-01-ts1.svs": ("tiff-tiles", (4443, 3567), 2, None, None),     # JPEG-2000, no MPP
    "openslide-python-boxes.tiff": ("tiff-tiles", (300, 250), 4, None, None),       # 72-dpi tag ignored
    "small_HE_levels.tiff": ("tiff-tiles", (300, 250), 4, None, None),
    "openslide-python-small.svs": ("tiff-tiles", (16, 16), 1, 0.499, 20.0),
    "kidney-48-5.tif": ("tifffile", (1493, 901), 1, None, None),                   # stripped plain TIFF
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_slides_open_with_metadata(shared_data: Path, name: str) -> None:
    backend, dims, levels, mpp, mag = EXPECTED[name]
    with open_slide(shared_data / "wsi" / name) as r:
        assert (r.backend, r.dimensions, r.level_count, r.mpp, r.magnification) == (backend, dims, levels, mpp, mag)
        assert r.slide_id == Path(name).stem
        region = r.read_region(0, 0, 0, 12, 10)
        assert region.shape == (10, 12, 3) and region.dtype == np.uint8
        thumb = r.thumbnail(64)
        assert max(thumb.shape[:2]) <= 64 and thumb.shape[2] == 3
        if mpp is None:
            assert r.mpp_note                                                 # says why


def test_mpp_override_wins(shared_data: Path) -> None:
    with open_slide(shared_data / "wsi" / "cmu-1-small-region.svs", mpp_override=0.25) as r:
        assert r.mpp == 0.25 and "override" in r.mpp_note
    with open_slide(shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs", mpp_override=0.5) as r:
        assert r.mpp == 0.5


def test_pyramid_levels_agree(shared_data: Path) -> None:
    with open_slide(shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs") as r:
        assert r.best_level_for_downsample(1.5) == 0 and r.best_level_for_downsample(2.0) == 1
        assert r.best_level_for_downsample(64) == 1
        hi = r.read_region(1024, 1024, 0, 512, 512)
        lo = r.read_region(1024, 1024, 1, 256, 256)                           # same area, level 1
        hi_small = cv2.resize(hi, (256, 256), interpolation=cv2.INTER_AREA)
        assert np.abs(hi_small.astype(int) - lo.astype(int)).mean() < 8


def test_outside_the_slide_reads_white(shared_data: Path) -> None:
    for name in ("cmu-1-small-region.svs", "kidney-48-5.tif"):
        with open_slide(shared_data / "wsi" / name) as r:
            w, h = r.dimensions
            assert (r.read_region(w + 10, h + 10, 0, 8, 8) == 255).all()
            edge = r.read_region(w - 4, 0, 0, 8, 8)
            assert (edge[:, 4:] == 255).all()


def test_tifffile_reader_matches_the_pixels(shared_data: Path) -> None:
    path = shared_data / "wsi" / "kidney-48-5.tif"
    ref = tifffile.imread(path)
    with open_slide(path) as r:
        np.testing.assert_array_equal(r.read_region(100, 200, 0, 64, 48), ref[200:248, 100:164])


def test_pillow_and_forced_tifffile_readers(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), img[..., ::-1])
    with open_slide(tmp_path / "x.png") as r:
        assert r.backend == "pillow" and r.mpp is None
        np.testing.assert_array_equal(r.read_region(0, 0, 0, 60, 40), img)
    tifffile.imwrite(tmp_path / "y.tif", img, resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    with open_slide(tmp_path / "y.tif", reader="tifffile") as r:
        assert r.mpp == pytest.approx(0.25) and r.backend == "tifffile"


def test_dicom_fallback_reassembles_the_frames(shared_data: Path) -> None:
    pytest.importorskip("pydicom")
    with open_slide(shared_data / "wsi" / "small_dicom.dcm") as r:
        assert r.backend == "dicom" and r.dimensions == (3236, 2638) and r.mpp is None
        img = r.read_region(0, 0, 0, 3236, 2638).astype(float)
    # the file stores its 500-px frames column by column; a wrong order leaves seams at frame borders
    seam = np.abs(img[:, 499] - img[:, 500]).mean()
    inner = np.mean([np.abs(img[:, c] - img[:, c + 1]).mean() for c in (250, 750, 1250)])
    assert seam < 2 * inner


def test_cucim_reader_matches_openslide(shared_data: Path) -> None:
    pytest.importorskip("cucim")
    path = shared_data / "wsi" / "cmu-1-small-region.svs"
    with open_slide(path, reader="cucim") as c, open_slide(path, reader="openslide") as o:
        assert c.dimensions == o.dimensions and c.mpp == pytest.approx(0.499)
        a, b = c.read_region(200, 300, 0, 64, 64), o.read_region(200, 300, 0, 64, 64)
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_unreadable_files_raise_dataerror(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_slide(tmp_path / "nope.svs")
    bad = tmp_path / "bad.svs"
    bad.write_bytes((shared_data / "wsi" / "cmu-1-small-region.svs").read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        open_slide(bad)
    with pytest.raises(DataError, match="unknown reader"):
        open_slide(shared_data / "wsi" / "cmu-1-small-region.svs", reader="vips")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no reader recognises"):
        open_slide(tmp_path / "notes.txt")


def test_slide_ids() -> None:
    assert slide_id_from_path("/a/TCGA-1.ome.tiff") == "TCGA-1"
    assert slide_id_from_path("x/slide.v2.svs") == "slide.v2"
    assert slide_id_from_path("b.OME.TIF") == "b"
