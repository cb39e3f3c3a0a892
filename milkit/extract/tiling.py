"""Tile grid at a target resolution: level-0 coordinates, tissue filter, pyramid level and blocks to read."""

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from milkit.errors import DataError
from milkit.extract.annotations import RegionMask
from milkit.extract.segmentation import TissueSegmentation
from milkit.extract.settings import ExtractionSettings
from milkit.slides.base import SlideReader

PER_SLIDE_HINT = "an mpp column in the cohort CSV for milkit run; `milkit extract --mpp-csv FILE` with slide_id,mpp"

MPP_PER_MAG = 10.0
"""Convention used when only one of mpp / magnification is known: mpp = 10 / magnification."""


@dataclass(frozen=True)
class TileResolution:
    """How target pixels map to the slide: ``downsample`` level-0 px per target px."""

    downsample: float
    patch_size_level0: int
    stride_level0: int
    mpp: float | None                   # slide level-0 um/px
    magnification: float | None         # slide level-0 objective power
    target_mpp: float | None
    target_magnification: float | None


def resolve_resolution(reader: SlideReader, settings: ExtractionSettings) -> TileResolution:
    """Work out the downsample for ``reader``; a slide without the needed metadata raises DataError
    that says how to supply it."""
    mpp, mag = reader.mpp, reader.magnification
    if settings.target_magnification is not None:
        mag0 = mag if mag is not None else (MPP_PER_MAG / mpp if mpp is not None else None)
        if mag0 is None:
            raise DataError(
                f"slide {reader.slide_id}: neither objective power nor mpp is known ({reader.mpp_note}), so "
                f"magnification {settings.target_magnification:g}x cannot be resolved; set mpp_override in the "
                "recipe's [extractor] table or pass `--set extractor.mpp_override=0.25` (40x) / 0.5 (20x), "
                f"or give this slide alone an mpp ({PER_SLIDE_HINT})")
        downsample = mag0 / settings.target_magnification
        target_mpp = mpp * downsample if mpp is not None else None
        target_mag: float | None = settings.target_magnification
    else:
        assert settings.target_mpp is not None
        if mpp is None:
            hint = (f" (it records {mag:g}x objective power, so target_magnification = "
                    f"{MPP_PER_MAG / settings.target_mpp:g} would work without mpp)" if mag is not None else "")
            raise DataError(
                f"slide {reader.slide_id} has no level-0 mpp ({reader.mpp_note}){hint}; supply it with "
                "mpp_override in the recipe's [extractor] table or `--set extractor.mpp_override=0.5`, or give "
                f"this slide alone an mpp ({PER_SLIDE_HINT})")
        downsample = settings.target_mpp / mpp
        target_mpp = settings.target_mpp
        target_mag = (mag / downsample) if mag is not None else None
    ps0 = max(1, round(settings.tile_size_px * downsample))
    stride0 = max(1, round(settings.stride * downsample))
    return TileResolution(downsample, ps0, stride0, mpp, mag, target_mpp, target_mag)


@dataclass
class TilePlan:
    """The tiles of one slide and how to read them."""

    coords: np.ndarray          # n 2 int64, level-0 top-left (x, y), row-major order
    tissue: np.ndarray          # n float, tissue fraction of each tile
    resolution: TileResolution
    level: int                  # pyramid level read
    level_downsample: float     # its downsample
    read_size: int              # tile side in pixels of that level

    def __len__(self) -> int:
        return len(self.coords)


def plan_tiles(reader: SlideReader, seg: TissueSegmentation, settings: ExtractionSettings,
               resolution: TileResolution | None = None, *, region: RegionMask | None = None) -> TilePlan:
    """Grid anchored at (0, 0), tiles fully inside the slide, kept when their tissue fraction
    (from ``seg.mask``) is at least ``settings.min_tissue_fraction``. With an annotation ``region``
    a tile must also be at least ``region.min_fraction`` inside it, and its tissue fraction counts
    only the tissue inside the region (tile = tissue ∩ annotation)."""
    res = resolution or resolve_resolution(reader, settings)
    w0, h0 = reader.dimensions
    ps, step = res.patch_size_level0, res.stride_level0
    xs = np.arange(0, w0 - ps + 1, step, dtype=np.int64)
    ys = np.arange(0, h0 - ps + 1, step, dtype=np.int64)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")                       # row-major: y outer, x inner
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)                  # n 2
    if region is None:
        tissue = seg.fraction_in_boxes(grid, ps) if len(grid) else np.zeros(0)
        keep = np.ones(len(grid), bool)
    else:
        inside, tissue = region.fractions(seg, grid, ps)
        keep = region.keep(inside)
    if settings.min_tissue_fraction > 0:
        keep &= tissue >= settings.min_tissue_fraction
    level = reader.best_level_for_downsample(res.downsample)
    lds = reader.level_downsamples[level]
    return TilePlan(grid[keep], tissue[keep], res, level, lds, max(1, round(ps / lds)))


def make_blocks(plan: TilePlan, block_tiles: int) -> list[np.ndarray]:
    """Group tile indices into ``block_tiles`` x ``block_tiles`` grid blocks (each read as one region)."""
    if len(plan) == 0:
        return []
    cell = plan.resolution.stride_level0 * block_tiles
    keys = (plan.coords[:, 1] // cell) * (1 << 31) + plan.coords[:, 0] // cell
    order = np.lexsort((np.arange(len(keys)), keys))
    splits = np.flatnonzero(np.diff(keys[order])) + 1
    return [np.sort(b) for b in np.split(order, splits)]


def resize_tile(tile: np.ndarray, out_px: int) -> np.ndarray:
    """Square RGB tile to ``out_px`` (area averaging when shrinking, bicubic when enlarging)."""
    if tile.shape[0] == out_px and tile.shape[1] == out_px:
        return tile
    interp = cv2.INTER_AREA if tile.shape[0] > out_px else cv2.INTER_CUBIC
    return cv2.resize(tile, (out_px, out_px), interpolation=interp)


def read_block(reader: SlideReader, plan: TilePlan, idx: np.ndarray, sizes: Sequence[int],
               outs: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Read the tiles ``idx`` of ``plan`` once and resize each to every side in ``sizes`` ->
    ``{px: [n, px, px, 3] uint8}`` (into ``outs[px]`` when given): one region read for the block
    when its tiles cover at least 90% of their bounding box, else one read per tile."""
    xy = plan.coords[idx]
    lds, rs = plan.level_downsample, plan.read_size
    bx0, by0 = int(xy[:, 0].min()), int(xy[:, 1].min())
    offs = np.rint((xy - [bx0, by0]) / lds).astype(np.int64)           # tile corners in level px
    bw, bh = int(offs[:, 0].max()) + rs, int(offs[:, 1].max()) + rs
    outs = dict(outs or {})
    for px in sizes:
        outs.setdefault(px, np.empty((len(idx), px, px, 3), dtype=np.uint8))
    if len(idx) * rs * rs < 0.9 * bw * bh:                              # sparse block: per-tile reads
        crops = (reader.read_region(int(x), int(y), plan.level, rs, rs) for x, y in xy)
    else:
        region = reader.read_region(bx0, by0, plan.level, bw, bh)
        crops = (region[oy: oy + rs, ox: ox + rs] for ox, oy in offs)
    for k, crop in enumerate(crops):
        for px in sizes:
            outs[px][k] = resize_tile(crop, px)
    return outs
