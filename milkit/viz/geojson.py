"""Per-patch scores as GeoJSON that QuPath opens as a measurement map.

Each patch becomes a QuPath tile object: a square Polygon in level-0 pixels with
``"objectType": "tile"`` and its scores in ``properties.measurements`` (a name -> number object,
as QuPath 0.4+ writes and reads them; 0.3's ``[{name, value}]`` list is read too). The slide's
tissue contours, as extraction wrote them, are added as ``"objectType": "annotation"`` features of
class ``Tissue``. In QuPath: File > Import objects (or drag the file onto the image), then
Measure > Show measurement maps.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from milkit.atomic import write_bytes
from milkit.errors import DataError
from milkit.extract.qc import SEGMENTATION_DIR


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 3)


def tile_feature(x: float, y: float, size: float, measurements: Mapping[str, float]) -> dict[str, Any]:
    """One QuPath tile: the square [x, x + size) x [y, y + size) as a closed, counter-clockwise ring."""
    x0, y0, x1, y1 = (_number(v) for v in (x, y, x + size, y + size))
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    values = {k: float(v) for k, v in measurements.items() if np.isfinite(v)}   # QuPath: a missing value is NaN
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "tile", "measurements": values}}


def scores_geojson(coords: np.ndarray, patch_size_level0: float, scores: Mapping[str, np.ndarray], *,
                   annotations: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A FeatureCollection: ``annotations`` (GeoJSON features, e.g. tissue contours) first, then one
    tile per patch (level-0 top-left ``coords`` [N, 2], side ``patch_size_level0``) whose measurements
    are ``scores`` ({name: [N]})."""
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    columns = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in scores.items()}
    bad = {name: len(v) for name, v in columns.items() if len(v) != len(xy)}
    if bad:
        raise DataError(f"one score per patch is needed: {len(xy)} patches, but {bad}")
    tiles = [tile_feature(x, y, patch_size_level0, {name: v[i] for name, v in columns.items()})
             for i, (x, y) in enumerate(xy)]
    return {"type": "FeatureCollection", "features": [*annotations, *tiles]}


def tissue_annotations(features_dir: Path | str, slide_id: str) -> tuple[list[dict[str, Any]], Path | None]:
    """The tissue contours extraction wrote for ``slide_id`` (``segmentation/<slide_id>.geojson`` in the
    feature folder, or beside it for several encoders), and the file; ([], None) when there is none."""
    d = Path(features_dir)
    for path in (d / SEGMENTATION_DIR / f"{slide_id}.geojson", d.parent / SEGMENTATION_DIR / f"{slide_id}.geojson"):
        if path.is_file():
            try:
                data = json.loads(path.read_bytes())
            except ValueError as exc:
                raise DataError(f"cannot read tissue contours {path}: {exc}; delete it or re-run extraction") from exc
            return [f for f in data.get("features", []) if isinstance(f, dict)], path
    return [], None


def write_scores_geojson(path: Path | str, coords: np.ndarray, patch_size_level0: float,
                         scores: Mapping[str, np.ndarray], *, annotations: Sequence[dict[str, Any]] = ()) -> Path:
    """Write :func:`scores_geojson` to ``path`` atomically (parents created); returns ``path``."""
    path = Path(path)
    doc = scores_geojson(coords, patch_size_level0, scores, annotations=annotations)
    write_bytes(path, json.dumps(doc, allow_nan=False, separators=(",", ":")).encode())
    return path
