"""Synthesise one demo slide (class layout + textures) and write it as a pyramidal tiled TIFF.

The TIFF is what OpenSlide calls ``generic-tiff``: level 0 plus reduced-resolution pages
(``subfiletype=1``) at downsamples 4 and 16, 256-px JPEG tiles, and resolution tags in
pixels per centimetre so that OpenSlide reports ``openslide.mpp-x``.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from milkit.atomic import atomic_path
from milkit.demo.textures import DRAWERS
from milkit.demo.tissue import GRID, PALETTE, TUMOUR_OF_SUBTYPE, Tissue, class_scores, composition
from milkit.demo.tissue import smooth_border, tissue_field, upsample_labels

MPP = 0.5
"""Level-0 microns per pixel of every demo slide."""
DOWNSAMPLE = 4
N_LEVELS = 3
TILE = 256
JPEG_QUALITY = 70


@dataclass(frozen=True)
class SlidePlan:
    """Everything needed to synthesise one slide; the same plan always gives the same pixels.

    Attributes:
        slide_id: File stem of the slide.
        subtype: One of :data:`milkit.demo.tissue.SUBTYPES`; picks the tumour texture.
        height: Level-0 height in pixels.
        width: Level-0 width in pixels.
        coverage: Wanted fraction of the slide area covered by tissue.
        target: Wanted tissue composition over :data:`milkit.demo.tissue.COMPONENTS`.
        seed: Entropy of this slide's random generator.
    """

    slide_id: str
    subtype: str
    height: int
    width: int
    coverage: float
    target: dict[str, float]
    seed: tuple[int, ...]


def render_slide(plan: SlidePlan) -> tuple[np.ndarray, dict[str, float]]:
    """Level-0 RGB image [H, W, 3] uint8 of a plan, and its measured tissue composition."""
    rng = np.random.default_rng(list(plan.seed))
    tumour = TUMOUR_OF_SUBTYPE[plan.subtype]
    tissue = tissue_field(rng, (plan.height // GRID, plan.width // GRID), plan.coverage)
    labels, coarse = upsample_labels(class_scores(rng, tissue, tumour, plan.target), (plan.height, plan.width))
    labels = smooth_border(labels, tissue)
    jitter = rng.uniform(0.97, 1.03, (len(Tissue), 3))  # per-slide stain variation
    jitter[Tissue.BACKGROUND] = rng.uniform(0.98, 1.01)  # glass stays neutral grey
    palette = PALETTE * jitter
    lut = np.zeros((256, 1, 3), np.uint8)
    lut[: len(Tissue), 0] = np.clip(palette, 0, 255)
    base = cv2.LUT(cv2.cvtColor(labels, cv2.COLOR_GRAY2RGB), lut)
    canvas = base.copy()
    for draw in DRAWERS.values():
        draw(canvas, labels, rng)
    canvas = cv2.copyTo(base, cv2.compare(labels, int(Tissue.BACKGROUND), cv2.CMP_EQ), canvas)  # clean glass
    _add_noise(canvas, rng)
    canvas = cv2.GaussianBlur(canvas, (3, 3), 0.8)
    return canvas, composition(coarse, tumour)


def _add_noise(canvas: np.ndarray, rng: np.random.Generator, sigma: float = 3.0, period: int = 509) -> None:
    """Add Gaussian pixel noise in place, tiling one ``period``-px noise patch (no tile multiple)."""
    noise = np.rint(sigma * rng.standard_normal((period, period, 3), dtype=np.float32))
    up, down = np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8)
    h, w = canvas.shape[:2]
    for y in range(0, h, period):
        for x in range(0, w, period):
            view = canvas[y : y + period, x : x + period]
            vh, vw = view.shape[:2]
            cv2.add(view, up[:vh, :vw], dst=view)
            cv2.subtract(view, down[:vh, :vw], dst=view)


def write_pyramid(path: Path, image: np.ndarray, *, mpp: float = MPP) -> None:
    """Write ``image`` as a pyramidal tiled JPEG TIFF, atomically (temp file + ``os.replace``).

    Args:
        path: Destination ``.tiff`` file.
        image: Level-0 RGB [H, W, 3] uint8.
        mpp: Level-0 microns per pixel, stored as pixels per centimetre.
    """
    level = image
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp) as tif:
            for k in range(N_LEVELS):
                if k:
                    h, w = level.shape[:2]
                    size = (max(w // DOWNSAMPLE, 1), max(h // DOWNSAMPLE, 1))
                    level = cv2.resize(level, size, interpolation=cv2.INTER_AREA)
                px_per_cm = 1e4 / (mpp * DOWNSAMPLE**k)
                tif.write(
                    level,
                    photometric="rgb",
                    tile=(TILE, TILE),
                    compression="jpeg",
                    compressionargs={"level": JPEG_QUALITY},
                    resolution=(px_per_cm, px_per_cm),
                    resolutionunit="CENTIMETER",
                    subfiletype=1 if k else 0,
                    description="milkit synthetic demo slide" if k == 0 else None,
                    software="milkit",
                    metadata=None,
                    maxworkers=1,
                )


def synthesise_slide(plan: SlidePlan, path: Path) -> dict[str, float]:
    """Render ``plan`` and write it to ``path``; returns the measured composition."""
    image, comp = render_slide(plan)
    write_pyramid(path, image)
    return comp


def init_worker() -> None:
    """Process-pool initialiser: one OpenCV thread per worker process (workers already run in parallel)."""
    cv2.setNumThreads(1)
