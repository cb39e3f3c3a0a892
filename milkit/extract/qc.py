"""Quality-control outputs per slide: a PNG overlay and the tissue contours as GeoJSON (QuPath-ready)."""

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from milkit.atomic import write_bytes
from milkit.extract.segmentation import TissueSegmentation

OVERLAY_MAX_PX = 1024
SEGMENTATION_DIR = "segmentation"
"""Subfolder of an extraction's output with these files (``<slide_id>.png``, ``<slide_id>.geojson``)."""


def _ring(points: np.ndarray) -> list[list[float]]:
    ring = [[round(float(x), 1), round(float(y), 1)] for x, y in points]
    return ring + ring[:1] if ring and ring[0] != ring[-1] else ring


def contours_geojson(seg: TissueSegmentation) -> dict:
    """A GeoJSON FeatureCollection: one Polygon (exterior + holes) per tissue piece, level-0 px."""
    features = []
    for i, (outer, holes) in enumerate(zip(seg.contours, seg.holes, strict=True)):
        if len(outer) < 3:
            continue
        rings = [_ring(outer)] + [_ring(h) for h in holes if len(h) >= 3]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {"tissue_id": i, "objectType": "annotation", "classification": {"name": "Tissue"}},
        })
    return {"type": "FeatureCollection", "features": features}


def save_geojson(seg: TissueSegmentation, path: Path) -> None:
    write_bytes(path, json.dumps(contours_geojson(seg)).encode())


def save_overlay(seg: TissueSegmentation, path: Path, *, coords: np.ndarray | None = None,
                 patch_size_level0: int | None = None, selected: Sequence[np.ndarray] = (),
                 carved: Sequence[np.ndarray] = ()) -> None:
    """PNG of the segmented thumbnail: tissue contours green, holes blue, tiles red; annotation rings
    (level-0 [k, 2]) that tiles come from yellow, carved-out ones magenta."""
    img = seg.thumbnail
    f = min(1.0, OVERLAY_MAX_PX / max(img.shape[:2]))
    if f < 1.0:
        img = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))),
                         interpolation=cv2.INTER_AREA)
    out = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    sx = img.shape[1] / (seg.thumbnail.shape[1] * seg.scale[0])        # overlay px per level-0 px
    sy = img.shape[0] / (seg.thumbnail.shape[0] * seg.scale[1])

    def px(points: np.ndarray) -> np.ndarray:
        return np.round(points * [sx, sy]).astype(np.int32).reshape(-1, 1, 2)

    if coords is not None and patch_size_level0:
        for x, y in np.asarray(coords):
            p0 = (int(round(x * sx)), int(round(y * sy)))
            p1 = (int(round((x + patch_size_level0) * sx)) - 1, int(round((y + patch_size_level0) * sy)) - 1)
            cv2.rectangle(out, p0, p1, (0, 0, 255), 1)
    cv2.polylines(out, [px(c) for c in seg.contours], True, (0, 200, 0), 2)
    cv2.polylines(out, [px(h) for hs in seg.holes for h in hs], True, (255, 0, 0), 2)
    cv2.polylines(out, [px(r) for r in selected], True, (0, 220, 255), 2)
    cv2.polylines(out, [px(r) for r in carved], True, (255, 0, 255), 2)
    ok, buf = cv2.imencode(".png", out)
    if not ok:
        raise OSError(f"could not encode overlay for {path}")
    write_bytes(path, buf.tobytes())
