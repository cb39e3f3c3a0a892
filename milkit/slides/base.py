"""The slide-reader interface every backend implements (level-0 coordinates, RGB uint8 out)."""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from milkit.errors import DataError

MPP_RANGE = (0.01, 50.0)
"""Plausible level-0 micrometres per pixel. Values outside (e.g. 352.8 from a 72-dpi default
resolution tag) are treated as missing."""

COMPOUND_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.btf", ".ome.zarr")


def slide_id_from_path(path: Path | str) -> str:
    """File name without its extension; compound ones (``.ome.tiff``) are stripped whole."""
    name = Path(path).name
    for suffix in COMPOUND_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def checked_mpp(value: float | None, source: str) -> tuple[float | None, str]:
    """(mpp, note): None with an explanation when ``value`` is missing or implausible."""
    if value is None:
        return None, f"no mpp in {source}"
    if not MPP_RANGE[0] <= value <= MPP_RANGE[1]:
        return None, f"ignored implausible mpp {value:.4g} um/px from {source} (likely a default resolution tag)"
    return float(value), f"mpp from {source}"


class SlideReader(ABC):
    """A whole-slide image opened for reading.

    Coordinates given to :meth:`read_region` are level-0 pixels (top-left x, y); sizes are in
    pixels of the requested level. Pixels outside the slide read as white.
    Backends fill ``level_dimensions`` ((width, height) per level), ``level_downsamples``,
    ``mpp`` and ``magnification`` in ``__init__``; ``mpp_override`` always wins over the file.
    """

    backend: ClassVar[str]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    magnification: float | None
    mpp_note: str

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.slide_id = slide_id_from_path(self.path)

    def _set_mpp(self, file_mpp: float | None, source: str, mpp_override: float | None) -> None:
        if mpp_override is not None:
            self.mpp, self.mpp_note = float(mpp_override), "mpp from mpp_override"
        else:
            self.mpp, self.mpp_note = checked_mpp(file_mpp, source)

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height)."""
        return self.level_dimensions[0]

    @abstractmethod
    def _read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        """Backend read; may assume w, h > 0. Returns H x W x 3 uint8 RGB."""

    def read_region(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        """Read a ``w`` x ``h`` region of ``level`` whose top-left is (x0, y0) in level-0 px.

        Returns:
            ``h x w x 3`` uint8 RGB; parts outside the slide are white.
        """
        if not 0 <= level < self.level_count:
            raise DataError(f"{self.path}: level {level} does not exist (the slide has {self.level_count})")
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {w}x{h}")
        out = self._read(int(x0), int(y0), int(level), int(w), int(h))
        if out.shape != (h, w, 3) or out.dtype != np.uint8:
            raise DataError(f"{self.path}: reader returned {out.shape} {out.dtype}, expected ({h}, {w}, 3) uint8")
        return out

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (1% tolerance)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.01:
                best = i
        return best

    def read_downsampled(self, downsample: float) -> np.ndarray:
        """The whole slide at ``downsample`` x level 0 (read from the best level, then resized)."""
        w0, h0 = self.dimensions
        out_w, out_h = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
        level = self.best_level_for_downsample(downsample)
        lw, lh = self.level_dimensions[level]
        img = self.read_region(0, 0, level, lw, lh)
        if (lw, lh) != (out_w, out_h):
            interp = cv2.INTER_AREA if out_w < lw else cv2.INTER_CUBIC
            img = cv2.resize(img, (out_w, out_h), interpolation=interp)
        return img

    def thumbnail(self, max_px: int) -> np.ndarray:
        """The whole slide scaled so its longer side is at most ``max_px`` (never enlarged)."""
        w0, h0 = self.dimensions
        return self.read_downsampled(max(1.0, max(w0, h0) / max_px))

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release the file handle."""

    def __enter__(self) -> "SlideReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, levels={self.level_count}, "
                f"dims={self.dimensions}, mpp={self.mpp}, magnification={self.magnification})")


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite non-premultiplied RGBA over white (OpenSlide's transparent = outside the slide)."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)
