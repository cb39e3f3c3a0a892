"""Per-patch scores as QuPath GeoJSON (milkit/viz/geojson.py): structure, and a round trip through the importer."""

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from milkit.errors import DataError
from milkit.extract.annotations import read_geojson
from milkit.extract.qc import save_geojson
from milkit.extract.segmentation import SegmentationParams, segment_image
from milkit.viz.geojson import scores_geojson, tissue_annotations, write_scores_geojson

# --- a structural RFC 7946 validator (what a JSON schema for GeoJSON checks, no download) -------------

GEOMETRY_DEPTH = {"Point": 1, "MultiPoint": 2, "LineString": 2, "MultiLineString": 3, "Polygon": 3, "MultiPolygon": 4}


def _position(p: Any, where: str) -> None:
    assert isinstance(p, list) and 2 <= len(p) <= 3, f"{where}: a position is [x, y] or [x, y, z], got {p!r}"
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p), where


def _ring(ring: Any, where: str) -> None:
    assert isinstance(ring, list) and len(ring) >= 4, f"{where}: a linear ring has >= 4 positions (RFC 7946 3.1.6)"
    for p in ring:
        _position(p, where)
    assert ring[0] == ring[-1], f"{where}: a linear ring is closed (first == last position)"


def validate_geometry(g: Any, where: str) -> None:
    assert isinstance(g, dict) and g.get("type") in (*GEOMETRY_DEPTH, "GeometryCollection"), f"{where}: geometry type"
    if g["type"] == "GeometryCollection":
        assert isinstance(g.get("geometries"), list), where
        for k, sub in enumerate(g["geometries"]):
            validate_geometry(sub, f"{where}.geometries[{k}]")
        return
    c = g.get("coordinates")
    assert isinstance(c, list), f"{where}: coordinates must be an array"
    if g["type"] == "Polygon":
        assert c, f"{where}: a Polygon has an exterior ring"
        for ring in c:
            _ring(ring, where)
    elif g["type"] == "MultiPolygon":
        for poly in c:
            assert isinstance(poly, list) and poly, where
            for ring in poly:
                _ring(ring, where)


def validate_feature_collection(doc: Any) -> None:
    assert isinstance(doc, dict) and doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list)
    for k, f in enumerate(doc["features"]):
        where = f"features[{k}]"
        assert isinstance(f, dict) and f.get("type") == "Feature", f"{where}: type must be Feature"
        assert "geometry" in f and "properties" in f, f"{where}: a Feature has geometry and properties members"
        assert f["properties"] is None or isinstance(f["properties"], dict), where
        assert "id" not in f or isinstance(f["id"], (str, int, float)), where
        if f["geometry"] is not None:
            validate_geometry(f["geometry"], f"{where}.geometry")


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN / Infinity (not JSON, and QuPath's Gson rejects them)."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")
    return json.loads(text, parse_constant=refuse)


def test_the_validator_catches_broken_geojson() -> None:
    good = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
         "properties": {}}]}
    validate_feature_collection(good)
    for broken in ({"type": "FeatureCollection"},
                   {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}}]},
                   {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {
                       "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}]}):  # not closed
        with pytest.raises(AssertionError):
            validate_feature_collection(broken)


# --- the export ------------------------------------------------------------------------------------

@pytest.fixture
def features_dir(tmp_path: Path) -> Path:
    """A feature folder with the tissue contours extraction writes (segmentation/s1.geojson): two blobs, one with a hole."""
    img = np.full((200, 300, 3), 240, np.uint8)
    cv2.circle(img, (80, 100), 60, (200, 120, 180), -1)
    cv2.circle(img, (80, 100), 20, (240, 240, 240), -1)
    cv2.rectangle(img, (180, 40), (280, 160), (200, 120, 180), -1)
    seg = segment_image(img, SegmentationParams(min_area=0.5, min_hole_area=0.1), scale=(4.0, 4.0), ref_patch_px=64)
    assert len(seg.contours) == 2 and sum(map(len, seg.holes)) == 1
    save_geojson(seg, tmp_path / "feats" / "segmentation" / "s1.geojson")
    return tmp_path / "feats"


def test_tiles_with_measurements_and_tissue_round_trip(features_dir: Path, tmp_path: Path) -> None:
    coords = np.array([[0, 0], [256, 0], [512, 256], [768, 512]])
    attention = np.array([0.1, 0.2, 0.3, 0.4])
    tissue, source = tissue_annotations(features_dir, "s1")
    assert source == features_dir / "segmentation" / "s1.geojson" and len(tissue) == 2
    out = write_scores_geojson(tmp_path / "s1.geojson", coords, 256, {"attention": attention, "rank": np.arange(4) / 3},
                               annotations=tissue)
    doc = strict_json(out.read_text())
    validate_feature_collection(doc)
    tiles = [f for f in doc["features"] if f["properties"]["objectType"] == "tile"]
    assert len(tiles) == 4 and tiles[1]["properties"]["measurements"] == {"attention": 0.2, "rank": 1 / 3}
    assert tiles[2]["geometry"]["coordinates"] == [[[512, 256], [768, 256], [768, 512], [512, 512], [512, 256]]]
    back = read_geojson(out)                                                   # the importer reads it back
    got = [a for a in back.features if a.object_type == "tile"]
    for a, (x, y), v in zip(got, coords, attention, strict=True):
        np.testing.assert_array_equal(a.polygons[0][0], [[x, y], [x + 256, y], [x + 256, y + 256], [x, y + 256], [x, y]])
        assert a.measurements["attention"] == v
    regions = back.regions                                                     # the tissue, as annotations
    original = read_geojson(features_dir / "segmentation" / "s1.geojson").features
    assert [a.classification for a in regions] == ["Tissue", "Tissue"]
    for a, b in zip(regions, original, strict=True):
        assert len(a.polygons[0]) == len(b.polygons[0])
        for ra, rb in zip(a.polygons[0], b.polygons[0], strict=True):
            np.testing.assert_array_equal(ra, rb)                             # identical coordinates
    assert sum(len(a.polygons[0]) - 1 for a in regions) == 1                  # the hole survived


def test_a_qupath_export_round_trips_through_the_importer(tmp_path: Path) -> None:
    """Annotations as QuPath writes them, passed through the exporter, come back with identical coordinates."""
    tumor = [[[10.5, 20.25], [400, 20.25], [400, 300], [10.5, 300], [10.5, 20.25]], [[50, 50], [60, 50], [60, 60], [50, 50]]]
    multi = [[[[500, 500], [600, 500], [600, 650], [500, 500]]], [[[700, 10], [720, 10], [720, 30], [700, 10]]]]
    qupath = [{"type": "Feature", "id": "2b5a4a9e-6f54-4a6e-9b3e-0c4b2d1f7a10",
               "geometry": {"type": "Polygon", "coordinates": tumor},
               "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
              {"type": "Feature", "id": "7c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5",
               "geometry": {"type": "MultiPolygon", "coordinates": multi},
               "properties": {"objectType": "annotation", "classification": {"name": "Stroma", "color": [0, 200, 0]}}}]
    out = write_scores_geojson(tmp_path / "rt.geojson", np.array([[0, 0]]), 256, {"attention": [1.0]}, annotations=qupath)
    validate_feature_collection(strict_json(out.read_text()))
    tumour, stroma = read_geojson(out).regions
    assert (tumour.classification, stroma.classification) == ("Tumor", "Stroma")
    assert [r.tolist() for r in tumour.polygons[0]] == tumor
    assert [[r.tolist() for r in p] for p in stroma.polygons] == multi


def test_non_finite_scores_are_left_out_and_lengths_checked() -> None:
    doc = scores_geojson(np.array([[0, 0], [8, 0]]), 8, {"attention": [np.nan, 2.0]})
    assert [f["properties"]["measurements"] for f in doc["features"]] == [{}, {"attention": 2.0}]
    with pytest.raises(DataError, match=r"2 patches, but \{'attention': 3\}"):
        scores_geojson(np.array([[0, 0], [8, 0]]), 8, {"attention": [1, 2, 3]})


def test_tissue_contours_are_found_beside_a_multi_encoder_folder(features_dir: Path) -> None:
    assert tissue_annotations(features_dir / "uni", "s1")[1] == features_dir / "segmentation" / "s1.geojson"
    assert tissue_annotations(features_dir, "s2") == ([], None)
