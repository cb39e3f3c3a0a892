"""The viewer's data and routes (milkit/view/viewer.py, runs.py, slides.py, app.py) on a trained run."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from milkit.view.overlays import overlay_shape
from milkit.viz import rundata


def png(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as im:
        return np.asarray(im)


def test_cohort_table_has_every_slide_and_its_prediction(client, trained):
    data = client.get("/api/cohort").json()
    rows = {r["slide_id"]: r for r in data["rows"]}
    assert len(rows) == 36 and data["runs"] is True
    preds = {r["slide_id"]: r for r in rundata.load_predictions(trained["run"]) if r["split"] == "test"}
    for sid, p in preds.items():
        assert rows[sid]["split"] == "test" and rows[sid]["pred"] == p["pred"] and rows[sid]["target"] == p["target"]
        assert rows[sid]["p(pred)"] == pytest.approx(p[f"prob_{p['pred']}"])
    assert rows[trained["slide"]]["slide_file"] is True
    assert sum(r["slide_file"] for r in rows.values()) == 1
    assert {c["key"]: c["numeric"] for c in data["columns"]}["p(pred)"] is True
    assert not any(c["key"].startswith("prob_") for c in data["columns"])


def test_slide_info_with_and_without_a_slide_file(client, trained):
    info = client.get(f"/api/slides/{trained['slide']}").json()
    assert (info["width"], info["height"], info["mpp"]) == (2048, 1792, 0.5) and info["note"] is None
    layer, = info["layers"]
    assert layer["fields"]["split"] == "test" and layer["fold"] == 0 and layer["report"] is None
    other = next(r["slide_id"] for r in client.get("/api/cohort").json()["rows"] if not r["slide_file"])
    blank = client.get(f"/api/slides/{other}").json()
    assert blank["backend"] == "blank" and "white canvas" in blank["note"]
    assert client.get("/api/slides/nope").status_code == 404
    assert "unknown slide 'nope'" in client.get("/api/slides/nope/slide.dzi").json()["error"]


def test_tiles_are_jpeg_and_cached(client, viewer, trained):
    sid = trained["slide"]
    viewer.tiles.clear()                                       # the browser tests may have asked for it already
    hits = viewer.tiles.hits
    first = client.get(f"/api/slides/{sid}/slide_files/11/2_3.jpeg")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content[:2] == b"\xff\xd8" and "max-age" in first.headers["cache-control"]
    assert client.get(f"/api/slides/{sid}/slide_files/11/2_3.jpeg").content == first.content
    assert viewer.tiles.hits == hits + 1
    assert client.get(f"/api/slides/{sid}/slide_files/11/99_0.jpeg").status_code == 404


def test_tile_cache_stays_within_its_budget(trained, view_registries):
    from milkit.view.viewer import CacheSizes, Viewer

    v = Viewer.open([trained["run"]], slide_dirs=[trained["slides"]], registries=view_registries,
                    caches=CacheSizes(tiles=40_000))
    dz = v.catalogue.deepzoom(trained["slide"])
    cols, rows = dz.tiles_across(dz.level_count - 1)
    sizes = [len(v.tile(trained["slide"], dz.level_count - 1, c, r)) for c in range(cols) for r in range(rows)]
    assert sum(sizes) > 40_000 >= v.tiles.bytes > 0
    v.catalogue.close()


def test_overlay_spans_the_slide_and_top_k_match_the_scores(client, viewer, trained):
    sid = trained["slide"]
    res = client.get(f"/api/runs/0/slides/{sid}/overlay.png?cmap=magma&normalise=minmax")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    img = png(res.content)
    assert img.shape == (*overlay_shape(2048, 1792), 4)
    s = viewer.runs[0].scorer(0).scores(sid)
    covered = img[..., 3] > 0
    assert covered.sum() == len(s.scores) * 224 * 224          # 1 overlay px per level-0 px here
    top = client.get(f"/api/runs/0/slides/{sid}/top.json?k=5").json()
    best = np.argsort(-s.scores)[:5]
    assert [(p["x"], p["y"]) for p in top["top"]] == [tuple(map(float, s.coords[i])) for i in best]
    assert top["what"] == "abmil attention, fold 0" and top["n_patches"] == len(s.scores)
    thumb = client.get(f"/api/runs/0/slides/{sid}/top/0.jpeg")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (160, 160)
    assert "unknown colour map" in client.get(f"/api/runs/0/slides/{sid}/overlay.png?cmap=nope").json()["error"]
    assert "fold must be" in client.get(f"/api/runs/0/slides/{sid}/overlay.png?fold=x").json()["error"]
    assert "fold 3 has no trained model" in client.get(f"/api/runs/0/slides/{sid}/top.json?fold=3").json()["error"]
    assert client.get(f"/api/runs/5/slides/{sid}/top.json").status_code == 404


def test_tissue_and_colours(client, trained):
    tissue = client.get(f"/api/slides/{trained['slide']}/tissue.json").json()
    assert tissue["source"] == f"{trained['slide']}.geojson" and len(tissue["polygons"]) == 1
    assert client.get("/api/colours/viridis").json()["colours"][0] == "#440154"


def test_ping_says_whether_this_run_is_served(client, viewer, tmp_path):
    from milkit.view.runs import run_token

    res = client.get(f"/api/ping?run={viewer.runs[0].token}")
    assert res.json()["run"] == 0 and res.headers["access-control-allow-origin"] == "*"
    assert client.get(f"/api/ping?run={run_token(tmp_path)}").json()["run"] is None
    assert "access-control-allow-origin" not in client.get("/api/cohort").headers


def test_patient_level_run_shows_the_case_prediction_on_each_slide(trained, tmp_path, view_registries):
    from milkit.view.viewer import Viewer

    run = tmp_path / "case_run"
    run.mkdir()
    shutil.copy(trained["run"] / "recipe.toml", run / "recipe.toml")
    (run / "cases.json").write_text(json.dumps({"caseA": ["s000", "s001"], "caseB": ["s002"]}))
    (run / "splits.json").write_text(json.dumps({"folds": [{"train": ["caseB"], "val": [], "test": ["caseA"]}]}))
    with (run / "predictions.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["fold", "split", "slide_id", "target", "pred", "risk"])
        w.writeheader()
        w.writerow({"fold": 0, "split": "test", "slide_id": "caseA", "target": "x", "pred": "y", "risk": "nan"})
    v = Viewer.open([run], registries=view_registries)
    rows = {r["slide_id"]: r for r in v.cohort()["rows"]}
    assert set(rows) == {"s000", "s001", "s002"}
    assert rows["s000"]["case_id"] == rows["s001"]["case_id"] == "caseA" and rows["s002"]["split"] == "train"
    assert rows["s000"]["pred"] == rows["s001"]["pred"] == "y"
    assert [r["slide_id"] for r in v.cohort()["rows"]] == ["s000", "s001", "s002"]


def test_json_answers_have_no_non_finite_numbers():
    from milkit.view.app import _json

    body = _json({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)}).body
    assert json.loads(body) == {"a": None, "b": [1.5, None], "c": 3}


def test_features_only_shows_where_the_patches_are(trained, view_registries):
    from milkit.view.viewer import Viewer

    features = trained["root"] / "cohort" / "features"
    v = Viewer.open([], features_dirs=[features], slide_dirs=[trained["slides"]], registries=view_registries)
    assert len(v.catalogue.ids) == 36 and v.layers()[0]["label"] == "patches"
    layer = v.scores(0, trained["slide"])
    assert (layer.scores == 1).all() and layer.what.startswith("patches")
    img = png(v.overlay(0, trained["slide"]))
    assert (img[..., 3] > 0).sum() == len(layer.scores) * 224 * 224
    assert v.cohort()["columns"] == [{"key": "slide_id", "numeric": False}]
    v.catalogue.close()


def test_report_run_fields(reports, view_registries):
    from milkit.view.viewer import Viewer

    v = Viewer.open([reports], registries=view_registries)
    run = v.runs[0]
    assert run.is_report_run and run.summary()["report"] is True
    report = run.report("s031")
    assert report["generated"].startswith("invasive carcinoma of type 1")
    assert report["fields"] == {"findings_agreement": 0.5}
    fields = run.fields("s031")
    assert fields["generated"] == report["generated"] and "reference" not in fields
    if report["scores"]:                                        # pycocoevalcap installed
        assert 0 < report["scores"]["BLEU_4"] < 1 and fields["ROUGE_L"] == report["scores"]["ROUGE_L"]
    assert run.report("s000") is None                           # a train slide: no prediction row
    assert "no trained model" in str(pytest.raises(Exception, v.scores, 0, "s031").value)
