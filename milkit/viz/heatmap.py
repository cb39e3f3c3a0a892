"""Attention heatmaps: per-patch scores rasterised onto the slide thumbnail, plus top/bottom tiles.

Memory and time are bounded by the thumbnail, not by the slide or the number of patches:
scores are rasterised with two ``np.bincount`` calls on a summed-area (difference) array
at thumbnail scale, so a 100k-patch slide costs a few MB and well under a second beyond
reading the thumbnail. Nothing is drawn per patch and no level-0 canvas is ever built.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import rankdata

from milkit.atomic import atomic_path
from milkit.errors import DataError

log = logging.getLogger("milkit")
MAX_CANVAS_PX = 16384
"""Largest heatmap side in pixels; larger requests ask for a smaller ``width`` or coarser level."""
Normalise = Literal["percentile", "minmax"]


@dataclass
class HeatmapResult:
    """What :func:`render_heatmap` wrote and how the overlay maps onto the slide.

    ``overlay`` is the H x W x 3 uint8 heatmap at thumbnail scale (its pixel (y, x) covers
    level-0 pixel (y / scale[1], x / scale[0])); ``overlay_box`` is (left, top, width,
    height) of that overlay inside ``png``, drawn unresampled. ``top``/``bottom`` are the
    (x, y, score) of the highest and lowest scoring patches.
    """

    png: Path
    tiles_png: Path | None
    overlay: np.ndarray
    overlay_box: tuple[int, int, int, int]
    scale: tuple[float, float]
    n_patches: int
    slide_available: bool
    top: list[tuple[int, int, float]] = field(default_factory=list)
    bottom: list[tuple[int, int, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    geojson: Path | None = None         # per-patch scores for QuPath (heatmap_for_run(geojson=...))


def normalise_scores(scores: np.ndarray, how: Normalise = "percentile") -> np.ndarray:
    """Scores mapped to [0, 1]: percentile rank (robust to softmax's few peaks) or min-max."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return s
    if how == "percentile":
        return (rankdata(s, method="average") - 1) / max(s.size - 1, 1) if s.size > 1 else np.ones(1)
    span = s.max() - s.min()
    return (s - s.min()) / span if span > 0 else np.full_like(s, 0.5)


def rasterise(coords: np.ndarray, values: np.ndarray, patch_size: float, scale: tuple[float, float],
              shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over the patches covering each pixel of an ``shape`` (H, W) grid.

    Each patch (level-0 top-left ``coords`` [N, 2], side ``patch_size``) covers the pixel
    rectangle [round(x*sx), round((x+ps)*sx)) x [round(y*sy), round((y+ps)*sy)), at least
    one pixel; overlapping patches are averaged. O(N + H*W) whatever the patch size.

    Returns:
        (mean [H, W] float32, covered [H, W] bool).
    """
    h, w = shape
    sx, sy = scale
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    x0 = np.round(xy[:, 0] * sx).astype(np.int64)                                   # n
    y0 = np.round(xy[:, 1] * sy).astype(np.int64)                                   # n
    x1 = np.clip(np.maximum(np.round((xy[:, 0] + patch_size) * sx).astype(np.int64), x0 + 1), 0, w)
    y1 = np.clip(np.maximum(np.round((xy[:, 1] + patch_size) * sy).astype(np.int64), y0 + 1), 0, h)
    x0, y0 = np.clip(x0, 0, w), np.clip(y0, 0, h)
    stride = w + 1
    corners = np.concatenate([y0 * stride + x0, y0 * stride + x1, y1 * stride + x0, y1 * stride + x1])  # 4n
    signs = np.repeat([1.0, -1.0, -1.0, 1.0], len(xy))                             # 4n
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    size = (h + 1) * stride
    total = np.bincount(corners, weights=signs * np.tile(v, 4), minlength=size).reshape(h + 1, stride)
    count = np.bincount(corners, weights=signs, minlength=size).reshape(h + 1, stride)
    total = total.cumsum(0).cumsum(1)[:h, :w]                                       # h w
    count = np.rint(count.cumsum(0).cumsum(1)[:h, :w])                              # h w
    covered = count > 0
    mean = np.zeros((h, w), dtype=np.float32)
    mean[covered] = total[covered] / count[covered]
    return mean, covered


def infer_patch_size(coords: np.ndarray) -> float:
    """Smallest positive spacing between distinct x (or y) coordinates: the grid step."""
    steps = []
    for axis in (0, 1):
        u = np.unique(np.asarray(coords)[:, axis])
        if u.size > 1:
            steps.append(np.diff(u).min())
    return float(min(steps)) if steps else 256.0


def _canvas(slide_path: Path | None, coords: np.ndarray, ps: float, width: int | None, level: int | None,
            notes: list[str]) -> tuple[np.ndarray, tuple[float, float], object | None]:
    """(background RGB, (sx, sy) thumbnail px per level-0 px, open reader or None)."""
    reader = None
    if slide_path is not None:
        try:
            from milkit.slides import open_slide

            reader = open_slide(slide_path)
        except DataError as exc:
            notes.append(f"slide file unavailable ({exc}); rendered on a blank canvas sized from the patch coordinates")
    else:
        notes.append("no slide file given; rendered on a blank canvas sized from the patch coordinates")
    if reader is not None:
        try:
            w0, h0 = reader.dimensions
            if level is not None and not 0 <= level < reader.level_count:
                raise DataError(f"{slide_path}: level {level} does not exist (the slide has {reader.level_count} "
                                f"levels, 0..{reader.level_count - 1})")
            ds = float(reader.level_downsamples[level]) if level is not None else max(1.0, w0 / (width or 1024))
            _check_size(w0 / ds, h0 / ds)
            img = reader.read_downsampled(ds)
        except BaseException:
            reader.close()  # the caller only gets the reader on success
            raise
        return img, (img.shape[1] / w0, img.shape[0] / h0), reader
    if level is not None:
        notes.append(f"--level {level} needs the slide file; used width {width or 1024} instead")
    w0 = float(coords[:, 0].max() + ps) if len(coords) else ps
    h0 = float(coords[:, 1].max() + ps) if len(coords) else ps
    s = (width or 1024) / w0
    _check_size(w0 * s, h0 * s)
    img = np.full((max(1, round(h0 * s)), max(1, round(w0 * s)), 3), 255, dtype=np.uint8)
    return img, (img.shape[1] / w0, img.shape[0] / h0), None


def _check_size(w: float, h: float) -> None:
    if max(w, h) > MAX_CANVAS_PX:
        raise DataError(f"a {w:.0f} x {h:.0f} px heatmap is too large (limit {MAX_CANVAS_PX} px a side); "
                        "ask for a smaller --width or a coarser --level")


def render_heatmap(slide_path: Path | str | None, coords: np.ndarray, scores: np.ndarray,
                   patch_size_level0: float | None, out_png: Path | str, *, width: int | None = 1024,
                   level: int | None = None, top_k: int = 8, cmap: str = "jet", alpha: float = 0.45,
                   normalise: Normalise = "percentile", title: str | None = None) -> HeatmapResult:
    """Write ``out_png`` (overlay + colour bar) and ``<stem>_tiles.png`` (top/bottom-k patches).

    Args:
        slide_path: the slide file, or None for a blank canvas sized from ``coords``.
        coords: [N, 2] level-0 top-left (x, y) of each patch.
        scores: [N] per-patch scores (e.g. attention); normalised with ``normalise``.
        patch_size_level0: patch side in level-0 px; inferred from the coordinate grid if None.
        out_png: heatmap file to write (parent folders are created).
        width: thumbnail width in px (ignored when ``level`` is given).
        level: draw at this pyramid level instead of ``width``.
        top_k: number of highest and lowest scoring patches read at level 0 (0 = none).
    """
    start = time.perf_counter()
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(coords) != len(scores) or not len(scores):
        raise DataError(f"heatmap needs one score per patch: {len(scores)} scores for {len(coords)} coordinates")
    if cmap not in matplotlib.colormaps:
        raise DataError(f"unknown colour map '{cmap}'; use a matplotlib name such as jet, viridis, magma or coolwarm")
    notes: list[str] = []
    if patch_size_level0 is None:
        patch_size_level0 = infer_patch_size(coords)
        notes.append(f"patch_size_level0 not recorded; inferred {patch_size_level0:g} px from the coordinate grid")
    ps = float(patch_size_level0)
    path = Path(slide_path) if slide_path is not None else None
    background, scale, reader = _canvas(path, coords, ps, width, level, notes)
    try:
        return _render(background, scale, reader, coords, scores, ps, out_png, top_k=top_k, cmap=cmap, alpha=alpha,
                       normalise=normalise, title=title, notes=notes, start=start)
    finally:
        if reader is not None:
            reader.close()


def _render(background: np.ndarray, scale: tuple[float, float], reader: Any, coords: np.ndarray, scores: np.ndarray,
            ps: float, out_png: Path | str, *, top_k: int, cmap: str, alpha: float, normalise: Normalise,
            title: str | None, notes: list[str], start: float) -> HeatmapResult:
    """Overlay, colour bar and top/bottom tiles on a background from :func:`_canvas`."""
    grid, covered = rasterise(coords, normalise_scores(scores, normalise), ps, scale, background.shape[:2])
    colours = matplotlib.colormaps[cmap](grid)[..., :3] * 255                       # h w 3
    overlay = background.astype(np.float32)
    overlay[covered] = (1 - alpha) * overlay[covered] + alpha * colours[covered]
    overlay = overlay.round().clip(0, 255).astype(np.uint8)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    label = "attention (percentile rank)" if normalise == "percentile" else "attention (min-max scaled)"
    box = _save_overlay(overlay, out_png, cmap, label, title)
    order = np.argsort(-scores, kind="stable")
    k = max(0, min(top_k, len(scores) // 2 if len(scores) > 1 else 1))
    top = [(int(coords[i, 0]), int(coords[i, 1]), float(scores[i])) for i in order[:k]]
    bottom = [(int(coords[i, 0]), int(coords[i, 1]), float(scores[i])) for i in order[::-1][:k]]
    tiles_png = None
    if reader is not None and k:
        from milkit.viz.tiles import save_tile_strip

        tiles_png = out_png.with_name(out_png.stem + "_tiles.png")
        save_tile_strip(reader, top, bottom, round(ps), tiles_png)
    elif k:
        notes.append("top/bottom tiles need the slide file; none written")
    for note in notes:
        log.info("heatmap %s: %s", out_png.name, note)
    return HeatmapResult(out_png, tiles_png, overlay, box, scale, len(scores), reader is not None, top, bottom,
                         notes, time.perf_counter() - start)


def _save_overlay(overlay: np.ndarray, path: Path, cmap: str, label: str, title: str | None) -> tuple[int, int, int, int]:
    """PNG = the overlay pixel for pixel (figimage, no resampling) + a colour bar on the right."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    h, w = overlay.shape[:2]
    dpi, right, top_margin = 100, 110, 30 if title else 8
    fig_w, fig_h = w + right, max(h + top_margin + 8, 220)
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="white")
    top = top_margin
    fig.figimage(overlay, xo=0, yo=fig_h - top - h, origin="upper")
    if title:
        fig.text(4 / fig_w, 1 - 6 / fig_h, title, ha="left", va="top", fontsize=9)
    bar_h = min(h, fig_h - top - 8) * 0.8
    cax = fig.add_axes((1 - (right - 14) / fig_w, (fig_h - top - bar_h - 0.1 * h) / fig_h, 14 / fig_w, bar_h / fig_h))
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return 0, top, w, h
