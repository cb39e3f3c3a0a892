"""extract_slides: outputs, attrs, resume, determinism, failures, sharding, worker processes."""

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic_slides import make_slide

from milkit.data.feature_formats import read_bag
from milkit.extract import ExtractionSettings, extract_slides
from milkit.components.extractors.color_texture import ColorTexture, ColorTextureConfig
from milkit.slides import open_slide

FAST = dict(target_mpp=2.0, tile_size_px=32, num_workers=0, batch_size=7, seg_min_area=1.0)


def encoder() -> ColorTexture:
    return ColorTexture(ColorTextureConfig(input_px=32))


def run(slides, out, shard=None, **overrides):
    settings = ExtractionSettings(**{**FAST, **overrides})
    return extract_slides(slides, out, extractor=encoder(), settings=settings, progress=False, shard=shard)


def test_outputs_are_level0_tissue_tiles_with_attrs(synthetic_slide: Path, tmp_path: Path) -> None:
    summary = run([synthetic_slide], tmp_path / "out")
    assert summary.done == ["synth-a"] and not summary.failed
    bag = read_bag(tmp_path / "out" / "synth-a.h5")
    a = bag.attrs
    assert a["feature_format"] == "milkit" and a["extractor"] == "color-texture"
    assert a["patch_size_level0"] == 128 and a["mpp"] == 0.5 and a["target_mpp"] == 2.0
    assert a["tile_size_px"] == 32 and a["reader"] == "tiff-tiles" and a["weights_sha256"] == ""
    assert bag.features.shape == (len(bag.coords), 96) and bag.features.dtype == np.float32
    # level-0 grid, inside the slide, on tissue (pink), rows in row-major order
    assert (bag.coords % 128 == 0).all() and (bag.coords >= 0).all()
    assert (bag.coords[:, 0] + 128 <= 1024).all() and (bag.coords[:, 1] + 128 <= 768).all()
    order = np.lexsort((bag.coords[:, 0], bag.coords[:, 1]))
    assert (order == np.arange(len(order))).all()
    with open_slide(synthetic_slide) as r:
        for x, y in bag.coords[:5].astype(int):
            tile = r.read_region(x, y, 0, 128, 128)
            assert (tile.astype(int).sum(-1) < 700).mean() >= 0.25          # mostly not glass
    seg = tmp_path / "out" / "segmentation"
    assert (seg / "synth-a.png").stat().st_size > 0 and (seg / "synth-a.geojson").stat().st_size > 0


def test_resume_skips_and_rerun_is_byte_identical(cohort: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(cohort, out)
    assert sorted(first.done) == ["s1", "s2", "s3"]
    blobs = {p.name: p.read_bytes() for p in out.glob("*.h5")}
    (out / "s2.h5").unlink()                                                 # "killed" before s2 finished
    second = run(cohort, out)
    assert second.done == ["s2"] and sorted(second.skipped) == ["s1", "s3"]
    assert {p.name: p.read_bytes() for p in out.glob("*.h5")} == blobs
    rows = list(csv.DictReader(open(out / "extraction_report.csv")))
    assert {r["slide_id"]: r["status"] for r in rows} == {"s1": "skipped", "s2": "done", "s3": "skipped"}
    assert all(int(r["n_tiles"]) > 0 for r in rows)


def test_failures_are_reported_and_the_rest_continue(cohort: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "broken.tiff"
    bad.write_bytes(cohort[0].read_bytes()[: 40_000])                        # truncated copy
    nompp = make_slide(tmp_path / "nompp.tiff", size=(640, 640), mpp=None)
    summary = run([*cohort, bad, nompp], tmp_path / "out")
    assert sorted(summary.done) == ["s1", "s2", "s3"]
    reasons = dict(summary.failed)
    assert set(reasons) == {"broken", "nompp"}
    assert "mpp_override" in reasons["nompp"] and "nompp" in reasons["nompp"]
    assert not (tmp_path / "out" / "broken.h5").exists()
    rows = {r["slide_id"]: r for r in csv.DictReader(open(tmp_path / "out" / "extraction_report.csv"))}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["reason"]
    again = run([nompp], tmp_path / "out", mpp_override=0.5)                 # the fix the message names
    assert again.done == ["nompp"]


def test_shards_partition_the_cohort_and_match_a_single_run(cohort: list[Path], tmp_path: Path) -> None:
    whole = run(cohort, tmp_path / "whole")
    parts = [run(cohort, tmp_path / "sharded", shard=(i, 2)) for i in range(2)]
    assert sorted(parts[0].done + parts[1].done) == sorted(whole.done)
    assert not set(parts[0].done) & set(parts[1].done)
    for sid in whole.done:
        assert (tmp_path / "sharded" / f"{sid}.h5").read_bytes() == (tmp_path / "whole" / f"{sid}.h5").read_bytes()
    assert (tmp_path / "sharded" / "extraction_report.shard-1-of-2.csv").is_file()


def test_worker_processes_give_the_same_features(synthetic_slide: Path, tmp_path: Path) -> None:
    run([synthetic_slide], tmp_path / "w0", num_workers=0, block_tiles=2)
    run([synthetic_slide], tmp_path / "w1", num_workers=1, block_tiles=3)
    a, b = read_bag(tmp_path / "w0" / "synth-a.h5"), read_bag(tmp_path / "w1" / "synth-a.h5")
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_allclose(a.features, b.features, atol=1e-5)


def test_changed_settings_do_not_silently_resume(synthetic_slide: Path, tmp_path: Path) -> None:
    run([synthetic_slide], tmp_path / "out")
    summary = run([synthetic_slide], tmp_path / "out", tile_size_px=24)
    assert summary.failed and "tile_size_px" in summary.failed[0][1]


def test_fp16_and_magnification_target(synthetic_slide: Path, tmp_path: Path) -> None:
    settings = ExtractionSettings(target_magnification=5.0, tile_size_px=32, num_workers=0, save_fp16=True,
                                  seg_min_area=1.0)
    extract_slides([synthetic_slide], tmp_path / "o", extractor=encoder(), settings=settings, progress=False)
    with h5py.File(tmp_path / "o" / "synth-a.h5") as f:
        assert f["features"].dtype == np.float16
        # no objective power in the file: 10 / mpp = 20x level 0, so 5x is a 4x downsample
        assert f.attrs["patch_size_level0"] == 128 and f.attrs["target_magnification"] == 5.0


def test_duplicate_slide_ids_are_rejected(synthetic_slide: Path, tmp_path: Path) -> None:
    from milkit.errors import DataError

    other = tmp_path / "b" / "synth-a.tiff"
    other.parent.mkdir()
    shutil.copy(synthetic_slide, other)
    with pytest.raises(DataError, match="share the id 'synth-a'"):
        run([synthetic_slide, other], tmp_path / "out")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_tile_data_fails_that_slide_only(synthetic_slide: Path, tmp_path: Path, workers: int) -> None:
    import tifffile

    bad = tmp_path / "corrupt.tiff"
    data = bytearray(synthetic_slide.read_bytes())
    with tifffile.TiffFile(synthetic_slide) as tif:                  # level 2 feeds the tiles, level 0 the mask
        page = tif.pages[2]
        for off, n in zip(page.dataoffsets, page.databytecounts, strict=True):
            data[off: off + n] = b"\x00" * n
    bad.write_bytes(bytes(data))
    summary = run([bad, synthetic_slide], tmp_path / "out", num_workers=workers)
    assert summary.done == ["synth-a"]
    assert summary.failed[0][0] == "corrupt" and "reading tiles failed" in summary.failed[0][1]


def test_explicit_slide_ids_name_the_outputs(synthetic_slide: Path, tmp_path: Path) -> None:
    settings = ExtractionSettings(**FAST)
    summary = extract_slides([synthetic_slide], tmp_path / "o", extractor=encoder(), settings=settings,
                             progress=False, slide_ids=["TCGA-XY-0001"])
    assert summary.done == ["TCGA-XY-0001"]
    assert read_bag(tmp_path / "o" / "TCGA-XY-0001.h5").attrs["slide_id"] == "TCGA-XY-0001"


@pytest.mark.parametrize("workers", [0, 1])
def test_slides_read_as_a_group_match_slides_read_one_by_one(cohort: list[Path], tmp_path: Path, workers: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from milkit.extract import pipeline

    run(cohort, tmp_path / "grouped", num_workers=workers)                   # all three through one DataLoader
    monkeypatch.setattr(pipeline, "LOADER_TILES", 1)
    run(cohort, tmp_path / "single", num_workers=workers)                    # one DataLoader per slide
    for sid in ("s1", "s2", "s3"):
        assert (tmp_path / "grouped" / f"{sid}.h5").read_bytes() == (tmp_path / "single" / f"{sid}.h5").read_bytes()


def test_an_encoder_error_fails_that_slide_and_the_group_goes_on(cohort: list[Path], tmp_path: Path) -> None:
    class FailsOnce(ColorTexture):
        calls = 0

        def forward(self, x):
            FailsOnce.calls += 1
            if FailsOnce.calls == 1:
                raise RuntimeError("boom on the first batch")
            return super().forward(x)

    settings = ExtractionSettings(**FAST)
    summary = extract_slides(cohort, tmp_path / "out", extractor=FailsOnce(ColorTextureConfig(input_px=32)),
                             settings=settings, progress=False)
    assert sorted(summary.done) == ["s2", "s3"]
    assert summary.failed == [("s1", "slide s1: the encoder 'color-texture' failed: RuntimeError: boom on the first batch")]
    assert [o.slide_id for o in summary.outcomes] == ["s1", "s2", "s3"]


def test_auto_workers_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from milkit.extract.encode import auto_workers

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert auto_workers(None, 100, cpu) == 0 and auto_workers(None, 100, gpu) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert auto_workers(None, 100, cpu) == 4 and auto_workers(None, 100, gpu) == 8
    assert auto_workers(None, 3, gpu) == 0 and auto_workers(None, 5, gpu) == 5
    assert auto_workers(2, 100, cpu) == 2 and auto_workers(6, 3, cpu) == 3              # asked for: honoured
