"""QuPath GeoJSON annotations: read one export per slide, check it against the slide, and rasterise
the region tiles may come from (``plan_tiles`` intersects it with the tissue).

Coordinates are level-0 pixels (x right, y down), as QuPath exports them. Polygons are rasterised
here with an exact pixel-centre rule (a scanline fill, even-odd within each polygon so interior
rings are holes, polygons counted so overlaps add up): ``cv2.fillPoly`` also fills the pixels its
edges touch, which grows every region and every hole by half a pixel.
"""

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from milkit.errors import DataError
from milkit.extract.segmentation import TissueSegmentation, mask_fraction_in_boxes
from milkit.slides.base import slide_id_from_path

AnnotationMode = Literal["inside", "outside"]
MissingAnnotations = Literal["skip", "tissue"]
ANNOTATION_SUFFIXES = (".geojson", ".json")
REGION_PX_PER_TILE = 16
"""The region mask has at least this many pixels along a tile side (so a tile's share inside a
region is exact to 1/16 of its side)."""
REGION_MAX_SIDE_PX = 4096
"""Cap on the region mask's longer side (its integral image then stays under 70 MB)."""
REGION_TYPES = frozenset({"annotation", "unknown"})
"""QuPath object types that are regions: annotations (and features without a type, which QuPath
imports as annotations). Detections, cells, tiles and TMA cores are not."""
_LEGACY_TYPES = {"PathAnnotationObject": "annotation", "PathDetectionObject": "detection",
                 "PathTileObject": "tile", "PathCellObject": "cell", "TMACoreObject": "tmaCore"}

Rings = tuple[np.ndarray, ...]
"""One polygon: its exterior ring then its holes, each [k, 2] float64 level-0 (x, y)."""


@dataclass(frozen=True)
class Annotation:
    """One object of a GeoJSON file: its polygons, QuPath class and object type."""

    index: int                          # position of its feature in the file (0-based)
    polygons: tuple[Rings, ...]         # a Polygon is one, a MultiPolygon several
    classification: str | None          # properties.classification.name (None = unclassified)
    object_type: str                    # annotation, detection, tile, cell, ... (unknown = none given)
    measurements: dict[str, float]      # properties.measurements (dict or QuPath 0.3's [{name, value}])

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) level-0 of the exterior rings."""
        pts = np.concatenate([rings[0] for rings in self.polygons])
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

    def describe(self) -> str:
        return f"feature {self.index} ({self.classification or 'unclassified'} {self.object_type})"


@dataclass(frozen=True)
class AnnotationFile:
    """A parsed GeoJSON file: every object with an area, and its sha256."""

    path: Path
    sha256: str
    features: tuple[Annotation, ...]
    without_area: int = 0               # Point / LineString features, ignored

    @property
    def regions(self) -> list[Annotation]:
        """The objects that are regions (annotations), in file order."""
        return [a for a in self.features if a.object_type in REGION_TYPES]

    def class_counts(self) -> str:
        """``"Tumor (2), Necrosis (1), unclassified (1)"`` over the regions."""
        counts = Counter(a.classification or "unclassified" for a in self.regions)
        return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items())) or "no annotations"


@dataclass(frozen=True)
class AnnotationRule:
    """Which annotated regions tiles come from.

    ``inside``: tiles inside the regions whose class is in ``include`` (every region when it is
    empty), minus the regions whose class is in ``exclude``. ``outside``: tiles outside all of those
    regions. A tile is kept when at least ``min_fraction`` of it is in the allowed region (any overlap
    when 0) and, as without annotations, when tissue inside the allowed region covers at least
    ``min_tissue_fraction`` of it.
    """

    mode: AnnotationMode = "inside"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_fraction: float = 0.5

    def identity(self) -> str:
        """JSON stored in feature files (``annotations_rule``); another rule is not resumed."""
        return json.dumps({"mode": self.mode, "include": sorted(self.include), "exclude": sorted(self.exclude),
                           "min_fraction": self.min_fraction}, sort_keys=True)

    def select(self, ann: AnnotationFile) -> tuple[list[Annotation], list[Annotation]]:
        """(selected regions, carved-out regions) of ``ann``."""
        carved = [a for a in ann.regions if a.classification in self.exclude]
        chosen = [a for a in ann.regions if a.classification not in self.exclude
                  and (not self.include or a.classification in self.include)]
        return chosen, carved

    def describe(self) -> str:
        what = ", ".join(self.include) if self.include else "any class"
        carve = f" minus {', '.join(self.exclude)}" if self.exclude else ""
        return f"{self.mode} annotations of {what}{carve}"


# --- reading ---------------------------------------------------------------------------------------

def find_annotation_file(folder: Path, slide_id: str, slide_path: Path | str | None = None) -> Path | None:
    """The annotation file of a slide in ``folder``: ``<slide_id>.geojson``, ``<slide file name>.geojson``
    (QuPath's image name, e.g. ``CMU-1.svs.geojson``) or ``<file name without extension>.geojson``
    (``.json`` also accepted). None when there is none; two different candidates are an error."""
    names = [slide_id]
    if slide_path is not None:
        names += [Path(slide_path).name, slide_id_from_path(slide_path)]
    candidates = dict.fromkeys(Path(folder) / f"{n}{s}" for s in ANNOTATION_SUFFIXES for n in names)
    found = [p for p in candidates if p.is_file()]
    if len({file_sha256(p) for p in found}) > 1:
        raise DataError(f"slide {slide_id} has several annotation files that differ: "
                        f"{', '.join(p.name for p in found)}; keep one (named <slide_id>.geojson)")
    return found[0] if found else None


def read_geojson(path: Path | str) -> AnnotationFile:
    """Read a QuPath GeoJSON export: a FeatureCollection, a list of Features (QuPath's default export)
    or one Feature. Polygon, MultiPolygon and GeometryCollection geometries are kept (interior rings
    are holes); points and lines have no area and are counted in ``without_area``."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read annotations {path}: {exc}; expected a QuPath GeoJSON export "
                        "(File > Export objects as GeoJSON)") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        items = [data]
    else:
        items = data
    if not isinstance(items, list):
        kind = f"object of type {data.get('type')!r}" if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: not a GeoJSON FeatureCollection, Feature or list of Features (top level: {kind})")
    features, without_area = [], 0
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("geometry"), dict):
            raise DataError(f"{path}: feature {i} has no geometry object")
        props = item.get("properties") if isinstance(item.get("properties"), dict) else {}
        try:
            polygons = tuple(_polygons(item["geometry"]))
        except (TypeError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: feature {i} has an unreadable geometry ({exc}); expected GeoJSON "
                            "[x, y] coordinates in level-0 pixels") from exc
        if not polygons:
            without_area += 1
            continue
        features.append(Annotation(i, polygons, _class_name(props.get("classification")),
                                   _object_type(item, props), _measurements(props.get("measurements"))))
    return AnnotationFile(path, file_sha256(path), tuple(features), without_area)


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _polygons(geometry: dict[str, Any]) -> Iterable[Rings]:
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        yield _rings(coords)
    elif kind == "MultiPolygon":
        for poly in coords:
            yield _rings(poly)
    elif kind == "GeometryCollection":
        for g in geometry.get("geometries") or []:
            yield from _polygons(g)
    elif kind not in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        raise ValueError(f"unknown geometry type {kind!r}")


def _rings(coords: Any) -> Rings:
    rings = []
    for ring in coords:
        arr = np.asarray(ring, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] < 2 or len(arr) < 3:
            raise ValueError(f"a ring needs at least 3 [x, y] positions, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("a ring has a non-finite coordinate")
        rings.append(arr[:, :2])
    if not rings:
        raise ValueError("a Polygon without rings")
    return tuple(rings)


def _class_name(classification: Any) -> str | None:
    """QuPath's class: ``{"name": ...}`` or, for derived classes, ``{"names": [...]}`` (joined by ': ')."""
    if isinstance(classification, str):
        return classification or None
    if not isinstance(classification, dict):
        return None
    if isinstance(classification.get("name"), str):
        return classification["name"]
    names = classification.get("names")
    return ": ".join(str(n) for n in names) if isinstance(names, list) and names else None


def _object_type(item: dict[str, Any], props: dict[str, Any]) -> str:
    for key in ("objectType", "object_type", "type"):
        if isinstance(props.get(key), str):
            return props[key]
    return _LEGACY_TYPES.get(str(item.get("id")), "unknown")        # QuPath 0.2 kept it in "id"


def _measurements(value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))}
    if isinstance(value, list):                                       # QuPath <= 0.3: [{name, value}]
        return {str(m["name"]): float(m["value"]) for m in value
                if isinstance(m, dict) and "name" in m and isinstance(m.get("value"), (int, float))}
    return {}


# --- checks against the slide ----------------------------------------------------------------------

def check_bounds(ann: AnnotationFile, dims: tuple[int, int], slide_id: str) -> None:
    """Raise DataError naming the file when a region lies entirely outside the slide's level-0 extent."""
    w0, h0 = dims
    for a in ann.regions:
        x0, y0, x1, y1 = a.bbox
        if x1 <= 0 or y1 <= 0 or x0 >= w0 or y0 >= h0:
            raise DataError(
                f"{ann.path}: {a.describe()} lies entirely outside slide {slide_id} ({w0} x {h0} level-0 px): "
                f"its bounding box is x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}. QuPath exports level-0 "
                "pixel coordinates; check that the file belongs to this slide (named <slide_id>.geojson) and "
                "that it was exported from the same image, not a cropped or rescaled copy")


def downsample_hint(ann: AnnotationFile, seg: TissueSegmentation, dims: tuple[int, int],
                    level_downsamples: Sequence[float] = ()) -> str:
    """A warning when the regions look exported at a downsample ``d``: they all fit in the top-left
    1/d of the slide, tissue covers under 20% of them as given but over half (and 2.5 times more)
    when scaled by d. '' when they look right."""
    polys = [rings for a in ann.regions for rings in a.polygons]
    if not polys:
        return ""
    pts = np.concatenate([r[0] for r in polys])
    fit = min(dims[0] / max(pts[:, 0].max(), 1.0), dims[1] / max(pts[:, 1].max(), 1.0))
    candidates = sorted({2.0 ** k for k in range(1, 7)} | {float(d) for d in level_downsamples if d > 1.5})
    candidates = [d for d in candidates if d <= fit * 1.02]
    if not candidates:
        return ""

    def coverage(d: float) -> float:
        inside = polygon_coverage([tuple(r * d for r in rings) for rings in polys], seg.mask.shape, seg.scale) > 0
        return float(seg.mask[inside].mean()) if inside.any() else 0.0

    as_given = coverage(1.0)
    if as_given >= 0.2:
        return ""
    best, best_cov = max(((d, coverage(d)) for d in candidates), key=lambda dc: dc[1])
    if best_cov < 0.5 or best_cov < 2.5 * as_given:
        return ""
    return (f"{ann.path.name}: the annotations look exported at downsample {best:g}: they all lie within the "
            f"top-left {dims[0] / best:.0f} x {dims[1] / best:.0f} px (1/{best:g} of each side), and tissue covers "
            f"{100 * as_given:.0f}% of them as given but "
            f"{100 * best_cov:.0f}% when scaled by {best:g}. QuPath exports level-0 pixel coordinates; "
            f"re-export them from the full-resolution image or multiply the coordinates by {best:g}")


# --- rasterising -----------------------------------------------------------------------------------

def polygon_coverage(polygons: Sequence[Rings], shape: tuple[int, int], scale: tuple[float, float]) -> np.ndarray:
    """How many of ``polygons`` contain each pixel centre of an ``shape`` (h, w) grid whose pixels are
    ``scale`` (x, y) level-0 px -> [h, w] int32. Within a polygon the rule is even-odd (holes, and
    islands in holes); pixel (i, j) is in when level-0 ((i + 0.5) sx, (j + 0.5) sy) is, points on a
    left or top edge counting as in (half-open, so adjacent polygons never share a pixel)."""
    h, w = shape
    sx, sy = scale
    diff = np.zeros((h, w + 1), np.int32)
    for rings in polygons:
        rows, xs = [], []
        for ring in rings:
            p = np.asarray(ring, np.float64)[:, :2] / [sx, sy] - 0.5       # k 2, pixel i's centre at i
            q = np.roll(p, -1, axis=0)                                     # edges p -> q (closes the ring)
            lo, hi = np.minimum(p[:, 1], q[:, 1]), np.maximum(p[:, 1], q[:, 1])
            j0 = np.clip(np.ceil(lo), 0, h).astype(np.int64)               # rows j with lo <= j < hi
            n = np.clip(np.ceil(hi), 0, h).astype(np.int64) - j0
            e = np.repeat(np.arange(len(p)), n)
            j = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + j0[e]
            t = (j - p[e, 1]) / (q[e, 1] - p[e, 1])
            rows.append(j)
            xs.append(p[e, 0] + t * (q[e, 0] - p[e, 0]))
        j, x = np.concatenate(rows), np.concatenate(xs)
        order = np.lexsort((x, j))                                         # by row, then x
        j, x = j[order], x[order]                                          # an even count per row
        i0 = np.clip(np.ceil(x[0::2]), 0, w).astype(np.int64)               # spans [x_a, x_b) per pair
        i1 = np.clip(np.ceil(x[1::2]), 0, w).astype(np.int64)
        np.add.at(diff, (j[0::2], i0), 1)
        np.add.at(diff, (j[0::2], i1), -1)
    return np.cumsum(diff, axis=1, dtype=np.int32)[:, :w]


@dataclass
class RegionMask:
    """Where tiles may come from, on a grid of at least 16 px per tile side."""

    mask: np.ndarray                    # h w uint8, 1 = allowed
    scale: tuple[float, float]          # level-0 px per mask px along x and y
    min_fraction: float                 # share of a tile that must be allowed (0 = any overlap)

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fractions(self, seg: TissueSegmentation, xy: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(share of each box inside the region, share that is tissue inside the region) -> [n], [n]."""
        h, w = self.mask.shape
        tissue = seg.mask if seg.mask.shape == (h, w) else cv2.resize(seg.mask, (w, h), interpolation=cv2.INTER_NEAREST)
        return (mask_fraction_in_boxes(self.mask, self.scale, xy, size),
                mask_fraction_in_boxes(self.mask & tissue, self.scale, xy, size))

    def keep(self, inside: np.ndarray) -> np.ndarray:
        return inside >= self.min_fraction if self.min_fraction > 0 else inside > 0


def region_grid(dims: tuple[int, int], patch_size_level0: int,
                seg: TissueSegmentation | None = None) -> tuple[tuple[int, int], tuple[float, float]]:
    """((h, w), (sx, sy)) of the region mask of a ``dims`` (w, h) slide: the tissue mask's grid when
    a tile spans at least 16 of its pixels, else a finer one (at most 4096 px a side)."""
    w0, h0 = dims
    ds = max(1.0, patch_size_level0 / REGION_PX_PER_TILE, max(w0, h0) / REGION_MAX_SIDE_PX)
    if seg is not None and max(seg.scale) <= ds and max(seg.mask.shape) <= REGION_MAX_SIDE_PX:
        return seg.mask.shape, seg.scale                                # fine enough: share its pixels
    w, h = max(1, math.ceil(w0 / ds)), max(1, math.ceil(h0 / ds))
    return (h, w), (w0 / w, h0 / h)


def region_mask(ann: AnnotationFile, rule: AnnotationRule, dims: tuple[int, int], *, patch_size_level0: int,
                seg: TissueSegmentation | None = None) -> RegionMask:
    """The allowed region of a slide of level-0 ``dims`` (w, h) under ``rule`` (on ``seg``'s grid when
    that is fine enough, see :func:`region_grid`)."""
    shape, scale = region_grid(dims, patch_size_level0, seg)
    chosen, carved = rule.select(ann)
    selected = polygon_coverage([r for a in chosen for r in a.polygons], shape, scale) > 0
    removed = polygon_coverage([r for a in carved for r in a.polygons], shape, scale) > 0
    allowed = selected & ~removed if rule.mode == "inside" else ~(selected | removed)
    return RegionMask(allowed.astype(np.uint8), scale, rule.min_fraction)


def outline_rings(ann: AnnotationFile, rule: AnnotationRule) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(rings of the selected regions, rings of the carved-out ones), for the QC overlay."""
    chosen, carved = rule.select(ann)
    return ([r for a in chosen for rings in a.polygons for r in rings],
            [r for a in carved for rings in a.polygons for r in rings])
