"""What the viewer draws over a slide: the score heatmap as one RGBA image aligned with level 0, the
top-k patches, their thumbnails, the colour scale and the tissue contours of the extraction.

The heatmap is :func:`milkit.viz.heatmap.rasterise` of the normalised scores (as ``milkit heatmap``
colours them) on a grid covering the whole slide, at most ``max_px`` on its longer side; pixels
without a patch are transparent, so the slide shows through, and the opacity is set in the browser.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np

from milkit.errors import DataError
from milkit.viz.heatmap import Normalise, infer_patch_size, normalise_scores, rasterise

OVERLAY_MAX_PX = 2048
THUMB_PX = 160
CMAPS = ("jet", "viridis", "magma", "inferno", "coolwarm", "RdYlBu_r", "turbo")
"""Colour maps offered on the slide page (any matplotlib name is accepted by the endpoint)."""


@dataclass(frozen=True)
class PatchScores:
    """Per-patch scores of one slide (level-0 top-left ``coords`` [N, 2], side ``patch_size``)."""

    coords: np.ndarray
    scores: np.ndarray
    patch_size: float
    what: str
    """What the scores are, for the page (``abmil attention, fold 0``, ``patches (no run)``)."""

    @property
    def nbytes(self) -> int:
        return int(self.coords.nbytes + self.scores.nbytes)


def check_cmap(name: str) -> str:
    if name not in matplotlib.colormaps:
        raise DataError(f"unknown colour map '{name}'; use a matplotlib name such as {', '.join(CMAPS)}")
    return name


def _lut(cmap: str) -> np.ndarray:
    """256 x 3 uint8 colours of ``cmap``."""
    return (matplotlib.colormaps[check_cmap(cmap)](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def colour_stops(cmap: str, n: int = 11) -> list[str]:
    """``n`` evenly spaced colours of ``cmap`` as ``#rrggbb``, low to high (a CSS gradient legend)."""
    lut = _lut(cmap)
    return ["#%02x%02x%02x" % tuple(int(c) for c in lut[round(i * 255 / (n - 1))]) for i in range(n)]


def overlay_shape(width: int, height: int, max_px: int = OVERLAY_MAX_PX) -> tuple[int, int]:
    """(H, W) of the heatmap image of a ``width`` x ``height`` slide."""
    s = min(1.0, max_px / max(width, height))
    return max(1, round(height * s)), max(1, round(width * s))


def overlay_rgba(layer: PatchScores, width: int, height: int, *, cmap: str = "jet",
                 normalise: Normalise = "percentile", max_px: int = OVERLAY_MAX_PX) -> np.ndarray:
    """H x W x 4 uint8 heatmap covering the whole ``width`` x ``height`` (level-0 px) slide: pixel (i, j)
    is level-0 (j * width / W, i * height / H); alpha 255 where a patch lies, 0 elsewhere."""
    h, w = overlay_shape(width, height, max_px)
    grid, covered = rasterise(layer.coords, normalise_scores(layer.scores, normalise), layer.patch_size,
                              (w / width, h / height), (h, w))
    index = np.clip(np.rint(grid * 255), 0, 255).astype(np.uint8)                  # h w
    rgb = cv2.LUT(cv2.merge([index, index, index]), _lut(cmap).reshape(256, 1, 3))  # h w 3, one table per channel
    return cv2.merge([*cv2.split(rgb), covered.astype(np.uint8) * 255])


def png_bytes(rgba: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError(f"could not encode a {rgba.shape} overlay as PNG")
    return buf.tobytes()


def top_patches(layer: PatchScores, k: int) -> list[dict[str, Any]]:
    """The ``k`` highest-scoring patches, best first: rank, level-0 x, y, size and score."""
    order = np.argsort(-layer.scores, kind="stable")[:max(0, k)]
    return [{"rank": i, "x": float(layer.coords[j, 0]), "y": float(layer.coords[j, 1]),
             "size": layer.patch_size, "score": float(layer.scores[j])} for i, j in enumerate(order)]


def patch_thumbnail(reader: Any, x: float, y: float, size: float, px: int = THUMB_PX) -> np.ndarray:
    """The level-0 square (x, y, size) as ``px`` x ``px`` RGB, read from the best pyramid level."""
    lv = reader.best_level_for_downsample(max(1.0, size / px))
    side = max(1, round(size / reader.level_downsamples[lv]))
    img = reader.read_region(round(x), round(y), lv, side, side)
    return cv2.resize(img, (px, px), interpolation=cv2.INTER_AREA if side > px else cv2.INTER_CUBIC)


def tissue_polygons(features_dirs: list[Path], slide_id: str) -> tuple[list[list[list[list[float]]]], str | None]:
    """Tissue contours of ``slide_id`` from its extraction's segmentation GeoJSON (the first feature folder
    that has one): polygons, each a list of rings (exterior first, then holes) of level-0 (x, y); and the file."""
    from milkit.viz.geojson import tissue_annotations

    for d in features_dirs:
        features, source = tissue_annotations(d, slide_id)
        if source is None:
            continue
        polygons = []
        for f in features:
            geom = f.get("geometry") or {}
            if geom.get("type") == "Polygon":
                polygons.append(geom["coordinates"])
            elif geom.get("type") == "MultiPolygon":
                polygons.extend(geom["coordinates"])
        return polygons, str(source)
    return [], None


def patch_layout(feature_file: Path) -> tuple[np.ndarray, float]:
    """(level-0 top-left corners [N, 2], patch side) of a feature file's patches (no model needed)."""
    from milkit.data.feature_formats import read_bag

    bag = read_bag(feature_file)
    if bag.coords is None:
        raise DataError(f"{feature_file} has no patch coordinates, so its patches cannot be placed on the slide")
    ps = bag.attrs.get("patch_size_level0")
    ps = float(ps) if ps else infer_patch_size(bag.coords)
    corners = bag.coords - ps / 2 if bag.attrs.get("coords_anchor") == "center" else bag.coords
    return np.asarray(corners, dtype=np.float64), ps
