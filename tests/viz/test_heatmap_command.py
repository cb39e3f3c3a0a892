"""``milkit heatmap`` (milkit/commands/heatmap.py) on the session's trained run."""

import pytest
import typer
from typer.testing import CliRunner
from vizhelpers import assert_sensible_png

from milkit.commands.heatmap import register
from milkit.errors import MilkitError

pytestmark = pytest.mark.slow


@pytest.fixture
def cli():
    app = typer.Typer()
    app.callback()(lambda: None)  # keep "heatmap" a sub-command
    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["heatmap", *map(str, args)])


def test_writes_heatmap_and_tiles_with_a_slide_file(cli, trained_run, tmp_path, shared_data):
    out = tmp_path / "hm.png"
    res = cli(trained_run, "--slide", "s003", "--out", out, "--width", 300, "--top-k", 2,
              "--slide-file", shared_data / "wsi" / "cmu-1-small-region.svs")
    assert res.exit_code == 0, res.output
    assert "heatmap (300 x" in res.output and str(out) in res.output.replace("\n", "")
    assert_sensible_png(out)
    assert_sensible_png(tmp_path / "hm_tiles.png", min_side=100)


def test_without_slide_file_says_blank_canvas(cli, trained_run, tmp_path):
    res = cli(trained_run, "--slide", "s003", "--out", tmp_path / "b.png", "--top-k", 0)
    assert res.exit_code == 0, res.output
    assert "blank canvas" in res.output and (tmp_path / "b.png").is_file()


def test_width_and_level_are_exclusive(cli, trained_run):
    res = cli(trained_run, "--slide", "s003", "--width", 100, "--level", 0)
    assert isinstance(res.exception, MilkitError) and "either --width or --level" in str(res.exception)


def test_geojson_of_a_trained_run_has_one_tile_per_patch(cli, trained_run, tmp_path):
    import json

    res = cli(trained_run, "--slide", "s003", "--out", tmp_path / "g.png", "--top-k", 0, "--geojson")
    assert res.exit_code == 0, res.output
    tiles = [f for f in json.loads((tmp_path / "g.geojson").read_text())["features"]
             if f["properties"]["objectType"] == "tile"]
    assert tiles and str(len(tiles)) in res.output.replace(",", "")
    assert all(set(f["properties"]["measurements"]) == {"attention", "attention percentile"} for f in tiles)
