"""QuPath GeoJSON annotations (milkit/extract/annotations.py): reading, rasterising, restricting tiles."""

import csv
import json
import uuid
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from synthetic_slides import make_slide

from milkit.components.extractors.color_texture import ColorTexture, ColorTextureConfig
from milkit.errors import DataError
from milkit.extract import ExtractionSettings, extract_slides
from milkit.extract.annotations import (check_bounds, downsample_hint, find_annotation_file, polygon_coverage,
                                        read_geojson, region_mask)
from milkit.extract.segmentation import segment_tissue
from milkit.extract.tiling import plan_tiles, resolve_resolution
from milkit.slides import open_slide


def rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feature(k: int, geometry: dict, cls: str | None = None, object_type: str = "annotation") -> dict:
    """A feature as QuPath 0.4+ exports it (UUID id, objectType, classification name + colour)."""
    props: dict = {"objectType": object_type}
    if cls is not None:
        props["classification"] = {"name": cls, "color": [200, 0, 0]}
    return {"type": "Feature", "id": str(uuid.UUID(int=k)), "geometry": geometry, "properties": props}


TUMOR = [rect(160, 160, 512, 608), rect(224, 224, 320, 320)]                 # exterior + a hole
STROMA = [[rect(672, 224, 864, 384)], [rect(64, 640, 160, 736)]]              # a MultiPolygon
NECROSIS = [rect(416, 448, 480, 544)]                                        # inside the tumour


def qupath_export(path: Path, features: list[dict] | None = None) -> Path:
    """A QuPath-style export over the synthetic slide: two classes of regions (a hole, a MultiPolygon),
    a Necrosis region inside the tumour, plus a detection and a point that are not regions."""
    features = features if features is not None else [
        feature(1, {"type": "Polygon", "coordinates": TUMOR}, "Tumor"),
        feature(2, {"type": "MultiPolygon", "coordinates": STROMA}, "Stroma"),
        feature(3, {"type": "Polygon", "coordinates": NECROSIS}, "Necrosis"),
        feature(4, {"type": "Polygon", "coordinates": [rect(0, 0, 1024, 768)]}, "Tumor", object_type="detection"),
        feature(5, {"type": "Point", "coordinates": [10, 10]}),
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def tiles_in(x0: int, y0: int, x1: int, y1: int, step: int = 32) -> set[tuple[int, int]]:
    return {(x, y) for x in range(x0, x1 - step + 1, step) for y in range(y0, y1 - step + 1, step)}


ALL = tiles_in(0, 0, 1024, 768)
TUMOR_T = tiles_in(160, 160, 512, 608) - tiles_in(224, 224, 320, 320)
STROMA_T = tiles_in(672, 224, 864, 384) | tiles_in(64, 640, 160, 736)
NECROSIS_T = tiles_in(416, 448, 480, 544)


def plan(slide: Path, ann_path: Path | None, **kw):
    """Plan of ``slide`` at 0.5 um/px (level 0), 32 px tiles -> (set of tile corners, plan, seg)."""
    settings = ExtractionSettings(target_mpp=0.5, tile_size_px=32, seg_min_area=1.0,
                                  **({"annotations": ann_path.parent} if ann_path else {}), **kw)
    with open_slide(slide) as reader:
        res = resolve_resolution(reader, settings)
        seg = segment_tissue(reader, settings.segmentation_params(), ref_patch_px=res.patch_size_level0)
        region = None
        if ann_path is not None:
            region = region_mask(read_geojson(ann_path), settings.annotation_rule(), reader.dimensions,
                                 patch_size_level0=res.patch_size_level0, seg=seg)
        p = plan_tiles(reader, seg, settings, res, region=region)
    return {(int(x), int(y)) for x, y in p.coords}, p, seg


# --- reading -----------------------------------------------------------------------------------------

def test_reads_a_qupath_export_with_identical_coordinates(tmp_path: Path) -> None:
    ann = read_geojson(qupath_export(tmp_path / "s.geojson"))
    assert [(a.index, a.classification, a.object_type) for a in ann.features] == [
        (0, "Tumor", "annotation"), (1, "Stroma", "annotation"), (2, "Necrosis", "annotation"), (3, "Tumor", "detection")]
    assert ann.without_area == 1 and len(ann.regions) == 3                  # the point; the detection is no region
    tumor, stroma = ann.features[0], ann.features[1]
    assert len(tumor.polygons) == 1 and len(tumor.polygons[0]) == 2          # exterior + hole
    for got, want in zip(tumor.polygons[0], TUMOR, strict=True):
        np.testing.assert_array_equal(got, np.array(want, float))
    assert [np.asarray(p[0]).tolist() for p in stroma.polygons] == [STROMA[0][0], STROMA[1][0]]
    assert ann.class_counts() == "Necrosis (1), Stroma (1), Tumor (1)"
    assert len(ann.sha256) == 64


def test_reads_other_qupath_layouts(tmp_path: Path) -> None:
    """QuPath's default export (a bare list), 0.2's type in "id", derived classes, 0.3's measurement list."""
    items = [{"type": "Feature", "id": "PathDetectionObject", "geometry": {"type": "Polygon", "coordinates": [rect(0, 0, 4, 4)]},
              "properties": {"classification": {"names": ["Tumor", "Positive"]},
                             "measurements": [{"name": "score", "value": 0.5}]}},
             {"type": "Feature", "geometry": {"type": "GeometryCollection", "geometries": [
                 {"type": "Polygon", "coordinates": [rect(1, 1, 2, 2)]}, {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}]},
              "properties": {}}]
    (tmp_path / "a.geojson").write_text(json.dumps(items))
    ann = read_geojson(tmp_path / "a.geojson")
    a, b = ann.features
    assert (a.object_type, a.classification, a.measurements) == ("detection", "Tumor: Positive", {"score": 0.5})
    assert (b.object_type, b.classification, len(b.polygons)) == ("unknown", None, 1) and ann.regions == [b]
    (tmp_path / "bad.geojson").write_text(json.dumps({"type": "Topology"}))
    with pytest.raises(DataError, match=r"bad.geojson: not a GeoJSON FeatureCollection"):
        read_geojson(tmp_path / "bad.geojson")
    (tmp_path / "ring.geojson").write_text(json.dumps([feature(1, {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})]))
    with pytest.raises(DataError, match=r"ring.geojson: feature 0 has an unreadable geometry"):
        read_geojson(tmp_path / "ring.geojson")


def test_finds_the_file_by_slide_id_or_qupath_image_name(tmp_path: Path) -> None:
    slide = tmp_path / "CMU-1.svs"
    assert find_annotation_file(tmp_path, "CMU-1", slide) is None
    (tmp_path / "CMU-1.svs.geojson").write_text("[]")                          # QuPath's image name
    assert find_annotation_file(tmp_path, "CMU-1", slide) == tmp_path / "CMU-1.svs.geojson"
    assert find_annotation_file(tmp_path, "patient-7", slide) == tmp_path / "CMU-1.svs.geojson"   # cohort id
    (tmp_path / "CMU-1.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(DataError, match="several annotation files that differ: CMU-1.geojson, CMU-1.svs.geojson"):
        find_annotation_file(tmp_path, "CMU-1", slide)


# --- rasterising -------------------------------------------------------------------------------------

def test_coverage_is_the_pixel_centre_rule_with_holes() -> None:
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radius = rng.uniform(30, 60, 40)
    star = np.stack([100 + radius * np.cos(angles), 90 + radius * np.sin(angles)], 1)      # k 2, level 0
    hole = np.stack([100 + 12 * np.cos(angles[::-1]), 90 + 12 * np.sin(angles[::-1])], 1)
    scale = (1.5, 1.25)
    got = polygon_coverage([(star, hole)], (160, 140), scale)
    ys, xs = np.mgrid[0:160, 0:140]
    centres = np.stack([(xs + 0.5) * scale[0], (ys + 0.5) * scale[1]], -1).reshape(-1, 2)
    inside = np.array([cv2.pointPolygonTest(star.astype(np.float32), (float(x), float(y)), False) > 0
                       and cv2.pointPolygonTest(hole.astype(np.float32), (float(x), float(y)), False) < 0
                       for x, y in centres]).reshape(160, 140)
    assert got.max() == 1 and 1000 < got.sum() < 160 * 140
    assert (got.astype(bool) == inside).mean() > 0.999                          # float32 edge cases aside
    square = np.array(rect(0, 0, 8, 8), float)
    twice = polygon_coverage([(square,), (square + 4,)], (12, 12), (1.0, 1.0))  # overlapping polygons add up
    assert twice.sum() == 128 and twice[5, 5] == 2 and twice[0, 0] == 1 and twice[11, 11] == 1


# --- tiling a synthetic slide ------------------------------------------------------------------------

@pytest.fixture
def export(tmp_path: Path) -> Path:
    (tmp_path / "ann").mkdir()
    return qupath_export(tmp_path / "ann" / "synth-a.geojson")


@pytest.mark.parametrize(("rule", "expected"), [
    ({}, TUMOR_T | STROMA_T | NECROSIS_T),                                    # default: every annotation
    ({"annotations_include": ["Tumor"]}, TUMOR_T),
    ({"annotations_include": ["Tumor"], "annotations_exclude": ["Necrosis"]}, TUMOR_T - NECROSIS_T),
    ({"annotations_exclude": ["Stroma"]}, TUMOR_T),
    ({"annotations_include": ["Stroma"], "annotations_mode": "outside"}, ALL - STROMA_T),
    ({"annotations_mode": "outside"}, ALL - TUMOR_T - STROMA_T),               # the tumour's hole is outside
])
def test_only_tiles_inside_the_selected_regions_minus_holes_survive(synthetic_slide, export, rule, expected) -> None:
    got, _, _ = plan(synthetic_slide, export, min_tissue_fraction=0, annotations_min_fraction=1.0, **rule)
    assert got == expected


def test_min_fraction_is_the_share_of_the_tile_inside(synthetic_slide, tmp_path) -> None:
    (tmp_path / "a").mkdir()
    path = qupath_export(tmp_path / "a" / "synth-a.geojson",
                         [feature(1, {"type": "Polygon", "coordinates": [rect(8, 8, 56, 40)]})])   # 24 x 24 of (0, 0)
    at = {f: plan(synthetic_slide, path, min_tissue_fraction=0, annotations_min_fraction=f)[0] for f in (0, 0.5, 1)}
    assert at[0] == {(0, 0), (32, 0), (0, 32), (32, 32)} and at[0.5] == {(0, 0), (32, 0)} and at[1] == set()


def test_tiles_are_tissue_intersected_with_the_annotation(synthetic_slide, export) -> None:
    tissue, p0, seg = plan(synthetic_slide, None)                             # min_tissue_fraction 0.25
    inside, _, _ = plan(synthetic_slide, export, min_tissue_fraction=0)
    both, p, _ = plan(synthetic_slide, export)
    assert both == tissue & inside and 0 < len(both) < min(len(tissue), len(inside))
    assert not both & tiles_in(288, 352, 384, 416)                             # the slide's own hole: glass
    assert (p.tissue >= 0.25).all()


def test_an_annotation_outside_the_slide_is_an_error_naming_the_file(tmp_path) -> None:
    path = qupath_export(tmp_path / "x.geojson", [feature(1, {"type": "Polygon", "coordinates": [rect(1100, 10, 1200, 90)]}, "Tumor")])
    with pytest.raises(DataError, match=r"x.geojson: feature 0 \(Tumor annotation\) lies entirely outside slide s "
                                        r"\(1024 x 768 level-0 px\).*x 1100..1200"):
        check_bounds(read_geojson(path), (1024, 768), "s")


def test_annotations_exported_at_a_downsample_get_a_warning(synthetic_slide, tmp_path) -> None:
    _, _, seg = plan(synthetic_slide, None)
    polys = [[(c / 4).tolist()] for c in seg.contours]                         # tissue outlines at 1/4 scale
    path = qupath_export(tmp_path / "small.geojson", [feature(1, {"type": "MultiPolygon", "coordinates": polys})])
    hint = downsample_hint(read_geojson(path), seg, (1024, 768), (1.0, 2.0, 4.0))
    assert "small.geojson" in hint and "downsample 4" in hint and "multiply the coordinates by 4" in hint
    right = qupath_export(tmp_path / "right.geojson",
                          [feature(1, {"type": "MultiPolygon", "coordinates": [[c.tolist()] for c in seg.contours]})])
    assert downsample_hint(read_geojson(right), seg, (1024, 768), (1.0, 2.0, 4.0)) == ""


# --- the pipeline ------------------------------------------------------------------------------------

FAST = dict(target_mpp=0.5, tile_size_px=32, num_workers=0, batch_size=64, seg_min_area=1.0)


def run(slides, out, **kw):
    return extract_slides(slides, out, extractor=ColorTexture(ColorTextureConfig(input_px=32)),
                          settings=ExtractionSettings(**{**FAST, **kw}), progress=False)


def _coords(path: Path) -> set[tuple[int, int]]:
    with h5py.File(path) as f:
        return {(int(x), int(y)) for x, y in f["coords"][:]}


def test_extraction_with_annotations_records_and_resumes_them(tmp_path) -> None:
    slides = [make_slide(tmp_path / "synth-a.tiff"), make_slide(tmp_path / "other.tiff", seed=4)]
    ann = tmp_path / "ann"
    ann.mkdir()
    path = qupath_export(ann / "synth-a.tiff.geojson")                         # QuPath's <image name>.geojson
    out = tmp_path / "out"
    summary = run(slides, out, annotations=ann, annotations_include=["Tumor"])
    assert summary.done == ["synth-a"] and summary.skipped == ["other"] and summary.ok
    rows = {r["slide_id"]: r for r in csv.DictReader(open(out / "extraction_report.csv"))}
    assert "no annotation file" in rows["other"]["reason"] and 'annotations_missing = "tissue"' in rows["other"]["reason"]
    tissue, _, _ = plan(slides[0], None)
    assert _coords(out / "synth-a.h5") == TUMOR_T & tissue
    with h5py.File(out / "synth-a.h5") as f:
        assert f.attrs["annotations_sha256"] == read_geojson(path).sha256
        assert f.attrs["annotations_file"] == "synth-a.tiff.geojson"
        assert json.loads(f.attrs["annotations_rule"]) == {"mode": "inside", "include": ["Tumor"], "exclude": [],
                                                            "min_fraction": 0.5}
    assert (out / "segmentation" / "synth-a.png").is_file()
    again = run(slides, out, annotations=ann, annotations_include=["Tumor"], annotations_missing="tissue")
    assert again.skipped == ["synth-a"] and again.done == ["other"]            # the slide without a file: its tissue
    with h5py.File(out / "other.h5") as f:
        assert f.attrs["annotations_sha256"] == "" and f.attrs["annotations_file"] == ""
    other_rule = run(slides[:1], out, annotations=ann, annotations_include=["Stroma"])
    assert "annotations_rule" in dict(other_rule.failed)["synth-a"]
    path.write_text(path.read_text().replace("160, 160", "192, 160"))         # the annotation was edited
    edited = run(slides[:1], out, annotations=ann, annotations_include=["Tumor"])
    assert "annotations_sha256" in dict(edited.failed)["synth-a"]


def test_extraction_failures_name_the_annotation_file(tmp_path) -> None:
    slide = make_slide(tmp_path / "s.tiff")
    ann = tmp_path / "ann"
    ann.mkdir()
    qupath_export(ann / "s.geojson", [feature(1, {"type": "Polygon", "coordinates": [rect(2000, 0, 2100, 50)]}, "Tumor")])
    reason = dict(run([slide], tmp_path / "o1", annotations=ann).failed)["s"]
    assert "s.geojson" in reason and "entirely outside slide s" in reason
    qupath_export(ann / "s.geojson")
    reason = dict(run([slide], tmp_path / "o2", annotations=ann, annotations_include=["Tumour"]).failed)["s"]
    assert "s.geojson has no annotation of class Tumour (it has: Necrosis (1), Stroma (1), Tumor (1))" in reason
    with pytest.raises(DataError, match="annotations folder not found"):
        run([slide], tmp_path / "o3", annotations=tmp_path / "nowhere")


def test_settings_need_a_folder_and_disjoint_classes(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"annotations_include need annotations = \"folder/\""):
        ExtractionSettings(annotations_include=["Tumor"])
    with pytest.raises(ValueError, match="both in annotations_include and annotations_exclude: Tumor"):
        ExtractionSettings(annotations=tmp_path, annotations_include=["Tumor"], annotations_exclude=["Tumor"])
    s = ExtractionSettings(annotations=tmp_path)
    assert ExtractionSettings.model_validate(s.model_dump()) == s
    assert s.annotation_rule().describe() == "inside annotations of any class"


def test_recipe_paths_resolve_against_the_recipe_folder(tmp_path, registries) -> None:
    from milkit.extract.build import build_extraction

    _, settings = build_extraction({"name": "color-texture", "annotations": "qupath/"}, registries, base_dir=tmp_path)
    assert settings.annotations == (tmp_path / "qupath").resolve()


# --- a real slide ------------------------------------------------------------------------------------

def test_restricts_tiling_of_a_real_slide(shared_data: Path, tmp_path: Path) -> None:
    slide = shared_data / "wsi" / "cmu-1-small-region.svs"                     # 2220 x 2967 px, 0.499 um/px
    (tmp_path / "a").mkdir()
    path = qupath_export(tmp_path / "a" / "cmu-1-small-region.geojson", [
        feature(1, {"type": "Polygon", "coordinates": [rect(448, 672, 1568, 2240), rect(896, 1120, 1120, 1568)]}, "Tumor"),
        feature(2, {"type": "MultiPolygon", "coordinates": [[rect(0, 0, 448, 448)], [rect(1792, 2464, 2016, 2688)]]},
                "Pen"),
    ])
    settings = ExtractionSettings(target_mpp=0.5, annotations=path.parent, annotations_exclude=["Pen"])
    with open_slide(slide) as reader:
        res = resolve_resolution(reader, settings)
        assert res.patch_size_level0 == 224
        seg = segment_tissue(reader, settings.segmentation_params(), ref_patch_px=224)
        ann = read_geojson(path)
        check_bounds(ann, reader.dimensions, "cmu-1-small-region")
        region = region_mask(ann, settings.annotation_rule(), reader.dimensions, patch_size_level0=224, seg=seg)
        everywhere = ExtractionSettings(target_mpp=0.5, min_tissue_fraction=0)
        got = {tuple(map(int, c)) for c in plan_tiles(reader, seg, everywhere, res, region=region).coords}
        tumor = tiles_in(448, 672, 1568, 2240, 224) - tiles_in(896, 1120, 1120, 1568, 224)
        assert got == tumor                                                    # inside, minus the hole
        tissue = {tuple(map(int, c)) for c in plan_tiles(reader, seg, settings, res).coords}
        both = {tuple(map(int, c)) for c in plan_tiles(reader, seg, settings, res, region=region).coords}
        assert both == tumor & tissue and len(both) > 5
    summary = run([slide], tmp_path / "out", target_mpp=0.5, tile_size_px=224, annotations=path.parent,
                  annotations_exclude=["Pen"])
    assert summary.done == ["cmu-1-small-region"]
    assert _coords(tmp_path / "out" / "cmu-1-small-region.h5") == both
