"""Per-slide mpp: the CSV table, extract_slides(slide_mpp=...), `milkit extract --mpp-csv` and the
cohort's mpp column in `milkit run`."""

from pathlib import Path

import h5py
import pytest
from synthetic_slides import make_slide
from typer.testing import CliRunner

from milkit.errors import DataError
from milkit.extract import ExtractionSettings, extract_slides
from milkit.extract.mpp_table import read_mpp_table
from milkit.components.extractors.color_texture import ColorTexture, ColorTextureConfig

FAST = dict(target_mpp=2.0, tile_size_px=32, num_workers=0, seg_min_area=1.0)


def test_table_by_id_or_file_name(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("slide_id,mpp\nS1,0.25\nS2,\nS3,0.5\n")
    assert read_mpp_table(tmp_path / "a.csv") == {"S1": 0.25, "S3": 0.5}          # empty cell: not given
    (tmp_path / "b.csv").write_text("slide,mpp,note\n/data/S1.svs,0.2520,x\nS2.ome.tiff,0.5,\n")
    assert read_mpp_table(tmp_path / "b.csv") == {"S1": 0.252, "S2": 0.5}


@pytest.mark.parametrize("text,message", [
    ("slide_id,microns\nS1,0.25\n", "expected columns slide_id .* and mpp; found slide_id, microns"),
    ("slide_id,mpp\nS1,0.25\nS2,quarter\n", r"line 3 \(S2\): mpp 'quarter' is not a number"),
    ("slide_id,mpp\nS1,72\n", r"line 2 \(S1\): mpp 72 is outside"),
    ("slide_id,mpp\nS1,0.25\nS1,0.5\n", "line 3: slide S1 is listed twice"),
])
def test_table_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_mpp_table(tmp_path / "m.csv")


def test_per_slide_mpp_rescues_a_slide_without_one(tmp_path: Path) -> None:
    nompp = make_slide(tmp_path / "nompp.tiff", size=(640, 640), mpp=None)
    other = make_slide(tmp_path / "other.tiff", size=(640, 640), mpp=0.5, seed=4)
    run = dict(extractor=ColorTexture(ColorTextureConfig(input_px=32)), progress=False)
    first = extract_slides([nompp, other], tmp_path / "o", settings=ExtractionSettings(**FAST), **run)
    assert first.done == ["other"] and "nompp" in dict(first.failed)["nompp"]
    assert "--mpp-csv" in dict(first.failed)["nompp"]                              # the message names the fix
    second = extract_slides([nompp, other], tmp_path / "o", settings=ExtractionSettings(**FAST),
                            slide_mpp={"nompp": 0.25}, **run)
    assert second.done == ["nompp"] and second.skipped == ["other"]
    with h5py.File(tmp_path / "o" / "nompp.h5") as f:
        # 0.25 um/px: a 32-px tile at 2 um/px spans 256 level-0 px (it would be 128 at 0.5)
        assert f.attrs["mpp"] == 0.25 and f.attrs["patch_size_level0"] == 256


def test_extract_command_takes_an_mpp_csv(tmp_path: Path) -> None:
    from test_extract_command import cli

    nompp = make_slide(tmp_path / "nompp.tiff", size=(640, 640), mpp=None)
    args = ["extract", str(nompp), "--out", str(tmp_path / "o"), "--extractor", "color-texture", "--no-progress",
            "--set", "target_mpp=2.0", "--set", "tile_size_px=32", "--set", "input_px=32", "--set", "seg_min_area=1"]
    (tmp_path / "typo.csv").write_text("slide_id,mpp\nnomp,0.5\n")
    res = CliRunner().invoke(cli(), [*args, "--mpp-csv", str(tmp_path / "typo.csv")])
    assert isinstance(res.exception, DataError) and "nomp" in str(res.exception)
    (tmp_path / "mpp.csv").write_text("slide_id,mpp\nnompp,0.5\n")
    res = CliRunner().invoke(cli(), [*args, "--mpp-csv", str(tmp_path / "mpp.csv")])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "o" / "nompp.h5") as f:
        assert f.attrs["mpp"] == 0.5


def test_run_uses_the_cohort_mpp_column(tmp_path: Path, registries) -> None:
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import ensure_features, load_cohort

    make_slide(tmp_path / "a.tiff", size=(640, 640), mpp=None)
    make_slide(tmp_path / "b.tiff", size=(640, 640), mpp=0.5, seed=5)
    (tmp_path / "cohort.csv").write_text("slide_id,label,slide_path,mpp\na,x,a.tiff,0.5\nb,y,b.tiff,\n")
    (tmp_path / "r.toml").write_text(
        '[cohort]\ncsv = "cohort.csv"\n[aggregator]\nname = "mean"\n[head]\nname = "classification"\n'
        '[extractor]\nname = "color-texture"\ninput_px = 32\ntarget_mpp = 2.0\ntile_size_px = 32\n'
        'seg_min_area = 1.0\nnum_workers = 0\n')
    recipe = validate_recipe(load_recipe(tmp_path / "r.toml"), registries)
    paths, left_out = ensure_features(recipe, load_cohort(recipe), progress=False)
    assert sorted(paths) == ["a", "b"] and left_out == {}
    with h5py.File(paths["a"]) as f:
        assert f.attrs["mpp"] == 0.5 and f.attrs["mpp_source"] == "mpp from mpp_override"
