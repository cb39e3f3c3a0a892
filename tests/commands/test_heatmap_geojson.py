"""``milkit heatmap --geojson`` (milkit/commands/heatmap.py): attention as QuPath tiles beside the PNG.

The run's model is replaced by a scorer with known scores, so this needs no training."""

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import milkit.viz.attention as attention
from milkit.commands.heatmap import register
from milkit.extract.annotations import read_geojson
from milkit.viz.attention import SlideScores

COORDS = np.array([[x, y] for y in range(0, 1024, 256) for x in range(0, 1536, 256)], dtype=np.float64)   # 24 2
SCORES = np.linspace(0.01, 0.2, len(COORDS))
TISSUE = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
    [[100.5, 100.5], [1400.5, 100.5], [1400.5, 900.5], [100.5, 900.5], [100.5, 100.5]]]},
    "properties": {"tissue_id": 0, "objectType": "annotation", "classification": {"name": "Tissue"}}}]}


class FakeScorer:
    """What ``RunScorer`` gives heatmap_for_run: per-patch scores and the feature folder."""

    def __init__(self, run_dir, *, fold=0, registries=None) -> None:
        self.features_dir = Path(run_dir) / "features"

    def scores(self, slide_id: str) -> SlideScores:
        return SlideScores(slide_id, COORDS, SCORES, 256.0, None, "abmil")


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.setattr(attention, "RunScorer", FakeScorer)
    (tmp_path / "run" / "features" / "segmentation").mkdir(parents=True)
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["heatmap", str(tmp_path / "run"), *map(str, args)])


def test_geojson_holds_every_patch_with_its_attention_and_the_tissue(cli, tmp_path) -> None:
    (tmp_path / "run" / "features" / "segmentation" / "s1.geojson").write_text(json.dumps(TISSUE))
    res = cli("--slide", "s1", "--out", tmp_path / "hm.png", "--top-k", 0, "--geojson")
    assert res.exit_code == 0, res.output
    out = tmp_path / "hm.geojson"
    assert "QuPath tiles with attention (24)" in res.output and out.name in res.output
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 25
    assert doc["features"][0] == TISSUE["features"][0]                        # the tissue, as an annotation
    ann = read_geojson(out)
    tiles = [a for a in ann.features if a.object_type == "tile"]
    np.testing.assert_array_equal([a.polygons[0][0][0] for a in tiles], COORDS)
    np.testing.assert_array_equal([a.measurements["attention"] for a in tiles], SCORES)
    ranks = [a.measurements["attention percentile"] for a in tiles]
    assert ranks[0] == 0.0 and ranks[-1] == 1.0 and np.all(np.diff(ranks) > 0)


def test_without_tissue_contours_it_says_so(cli, tmp_path) -> None:
    res = cli("--slide", "s1", "--out", tmp_path / "hm.png", "--top-k", 0, "--geojson")
    assert res.exit_code == 0, res.output
    assert "no tissue contours" in res.output.replace("\n", " ")
    assert len(json.loads((tmp_path / "hm.geojson").read_text())["features"]) == 24


def test_no_geojson_unless_asked(cli, tmp_path) -> None:
    res = cli("--slide", "s1", "--out", tmp_path / "hm.png", "--top-k", 0)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "hm.png").is_file() and not (tmp_path / "hm.geojson").exists()
