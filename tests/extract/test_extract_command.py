"""``milkit extract`` end to end on the real slides in shared/data/wsi plus a truncated copy."""

import csv
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from milkit.commands.extract import parse_shard, register


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("version")
    def _version() -> None:  # a second command keeps `extract` a named subcommand
        """(test helper)"""

    return app


def report(out: Path) -> dict[str, dict]:
    return {r["slide_id"]: r for r in csv.DictReader(open(out / "extraction_report.csv"))}


ARGS = ["--extractor", "color-texture", "--set", "target_mpp=4.0", "--set", "extractor.tile_size_px=64",
        "--set", "mpp_override=0.5", "--set", "input_px=32", "--set", "seg_min_area=1", "--no-progress"]


@pytest.mark.slow
def test_extract_real_slides_reports_the_bad_one_and_resumes(shared_data: Path, tmp_path: Path) -> None:
    wsi = tmp_path / "wsi"
    shutil.copytree(shared_data / "wsi", wsi)
    (wsi / "PROVENANCE.md").unlink()
    (wsi / "cmu-truncated.svs").write_bytes((wsi / "cmu-1-small-region.svs").read_bytes()[:600_000])
    out = tmp_path / "out"
    first = CliRunner().invoke(cli(), ["extract", str(wsi), "--out", str(out), *ARGS])
    assert first.exit_code == 1, first.output
    rows = report(out)
    assert len(rows) == 8
    readable = {"cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"}
    try:
        import pydicom  # noqa: F401
        readable.add("small_dicom")
    except ImportError:
        assert "pydicom" in rows["small_dicom"]["reason"]
    for sid in readable:
        assert rows[sid]["status"] == "done" and (out / f"{sid}.h5").is_file()
    assert rows["cmu-truncated"]["status"] == "failed" and rows["cmu-truncated"]["reason"]
    assert not (out / "cmu-truncated.h5").exists()
    for sid in ("openslide-python-small", "openslide-python-boxes", "small_HE_levels"):
        assert "smaller than one tile" in rows[sid]["reason"]
    assert "no tissue" in rows["kidney-48-5"]["reason"]                      # a near-blank IHC image
    assert "cmu-truncated" in first.output and "failed" in first.output
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    second = CliRunner().invoke(cli(), ["extract", str(wsi), "--out", str(out), *ARGS])
    assert second.exit_code == 1
    statuses = {r["status"] for r in report(out).values()}
    assert "done" not in statuses                                            # no work redone
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.h5")} == before


def test_exit_0_when_all_succeed_and_recipe_table_is_used(shared_data: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[extractor]\nname = "color-texture"\ntarget_mpp = 4.0\ntile_size_px = 64\ninput_px = 32\n')
    slide = shared_data / "wsi" / "cmu-1-small-region.svs"
    res = CliRunner().invoke(cli(), ["extract", str(slide), "--out", str(tmp_path / "o"), "--recipe", str(recipe),
                                     "--set", "seg_min_area=1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "cmu-1-small-region.h5").is_file()


def test_bad_keys_are_recipe_errors(tmp_path: Path) -> None:
    from milkit.errors import RecipeError

    res = CliRunner().invoke(cli(), ["extract", str(tmp_path), "--out", str(tmp_path / "o"),
                                     "--extractor", "color-texture", "--set", "target_mp=1"])
    assert isinstance(res.exception, RecipeError)
    assert "did you mean 'target_mpp'" in str(res.exception)


def test_parse_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_shard("1/4") == (1, 4)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert parse_shard(None) == (2, 3)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert parse_shard(None) is None
    from milkit.errors import RecipeError

    with pytest.raises(RecipeError):
        parse_shard("4/4")
