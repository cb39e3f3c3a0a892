"""Deep Zoom (DZI) tiles of any slide milkit can open, for OpenSeadragon.

The geometry is OpenSlide's ``openslide.deepzoom.DeepZoomGenerator``: level ``L`` of ``n`` is the
slide halved ``n - 1 - L`` times (sizes rounded up), cut into ``tile_size`` px tiles that overlap
their neighbours by ``overlap`` px. Pixels come from milkit's readers (:mod:`milkit.slides`), so
formats OpenSlide cannot read (plain TIFF, PNG, DICOM through pydicom) are served the same way.

Fine levels are read from the best pyramid level and shrunk (at most the level step times the tile
size is decoded per tile). Every level at or below ``base_px`` on its longer side is cut from one
small in-memory pyramid built once per slide, so the coarse levels OpenSeadragon asks for first never
decode a whole pyramid level per tile.
"""

import math
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from milkit.errors import DataError
from milkit.slides import SlideReader

TILE_SIZE = 254
OVERLAP = 1
BASE_PX = 2048
"""Longer side of the in-memory pyramid that serves the coarse levels."""


class ReaderPool:
    """Up to ``size`` readers of one slide, each used by one thread at a time (readers keep
    per-handle state such as tile caches, so they are not shared between threads). After
    :meth:`close`, a reader still in use is closed when its thread gives it back."""

    def __init__(self, open_reader: Callable[[], SlideReader], size: int = 2) -> None:
        self._open = open_reader
        self._free: queue.LifoQueue[SlideReader] = queue.LifoQueue()
        self._count = 0
        self._lock = threading.Lock()
        self._size = max(1, size)
        self._closed = False
        self.first = self._new()
        """A reader for metadata (dimensions, levels, mpp); also lent out like the others."""
        self._free.put(self.first)

    def _new(self) -> SlideReader:
        reader = self._open()
        self._count += 1
        return reader

    @contextmanager
    def reader(self) -> Iterator[SlideReader]:
        if self._closed:
            raise DataError(f"{self.first.path} was closed (too many slides open); reload the page")
        try:
            r = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                r = self._new() if self._count < self._size else None
            if r is None:
                try:
                    r = self._free.get(timeout=60)
                except queue.Empty:
                    raise DataError(f"{self.first.path}: no reader free after 60 s; reload the page") from None
        try:
            yield r
        finally:
            with self._lock:
                if not self._closed:
                    self._free.put(r)
                    r = None
            if r is not None:
                r.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            while not self._free.empty():
                self._free.get_nowait().close()


def dz_dimensions(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) of every Deep Zoom level, coarsest (1 x 1) first."""
    dims = [(width, height)]
    while dims[-1] != (1, 1):
        w, h = dims[-1]
        dims.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
    return dims[::-1]


class DeepZoom:
    """The Deep Zoom pyramid of one slide.

    Args:
        pool: readers of the slide.
        tile_size: tile side in px, without the overlap.
        overlap: px each tile shares with each neighbour.
        base_px: levels whose longer side is at most this are cut from an in-memory pyramid.
    """

    def __init__(self, pool: ReaderPool, *, tile_size: int = TILE_SIZE, overlap: int = OVERLAP,
                 base_px: int = BASE_PX) -> None:
        self.pool = pool
        self.tile_size, self.overlap = tile_size, overlap
        r = pool.first
        self.width, self.height = r.dimensions
        self.level_dims = dz_dimensions(self.width, self.height)
        self.level_count = len(self.level_dims)
        self.base_level = max(i for i, (w, h) in enumerate(self.level_dims) if max(w, h) <= base_px)
        self._base: list[np.ndarray] | None = None
        self._base_lock = threading.Lock()

    def downsample(self, level: int) -> int:
        return 2 ** (self.level_count - 1 - level)

    def tiles_across(self, level: int) -> tuple[int, int]:
        w, h = self.level_dims[level]
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def dzi(self, fmt: str = "jpeg") -> str:
        """The ``.dzi`` descriptor OpenSeadragon opens."""
        return ('<?xml version="1.0" encoding="UTF-8"?>'
                f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" '
                f'Overlap="{self.overlap}" TileSize="{self.tile_size}"><Size Width="{self.width}" '
                f'Height="{self.height}"/></Image>')

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of a tile in its level's pixels, overlap included."""
        if not 0 <= level < self.level_count:
            raise DataError(f"Deep Zoom level {level} does not exist (0..{self.level_count - 1})")
        cols, rows = self.tiles_across(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise DataError(f"tile ({col}, {row}) does not exist at Deep Zoom level {level} ({cols} x {rows} tiles)")
        lw, lh = self.level_dims[level]
        x = col * self.tile_size - (self.overlap if col else 0)
        y = row * self.tile_size - (self.overlap if row else 0)
        x1 = min(lw, (col + 1) * self.tile_size + self.overlap)
        y1 = min(lh, (row + 1) * self.tile_size + self.overlap)
        return x, y, x1 - x, y1 - y

    def tile(self, level: int, col: int, row: int) -> np.ndarray:
        """The RGB tile (h x w x 3 uint8) at ``col``, ``row`` of ``level``."""
        x, y, w, h = self.tile_box(level, col, row)
        if level <= self.base_level:
            return np.ascontiguousarray(self._base_pyramid()[level][y:y + h, x:x + w])
        return self._read(x, y, w, h, self.downsample(level))

    def _read(self, x: int, y: int, w: int, h: int, ds: float) -> np.ndarray:
        """``w`` x ``h`` px at downsample ``ds`` from (x, y) of that scale: read from the best
        pyramid level, then shrunk."""
        with self.pool.reader() as r:
            lv = r.best_level_for_downsample(ds)
            f = ds / r.level_downsamples[lv]                        # level px per output px (>= 1)
            rw, rh = max(1, math.ceil(w * f)), max(1, math.ceil(h * f))
            img = r.read_region(round(x * ds), round(y * ds), lv, rw, rh)
        if (rw, rh) != (w, h):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        return img

    def _base_pyramid(self) -> list[np.ndarray]:
        """Levels 0..base_level as arrays (built once; at most ~4/3 x base_px^2 x 3 bytes)."""
        with self._base_lock:
            if self._base is None:
                w, h = self.level_dims[self.base_level]
                top = self._read_whole(w, h, self.downsample(self.base_level))
                levels = [top]
                for lw, lh in reversed(self.level_dims[:self.base_level]):
                    levels.append(cv2.resize(levels[-1], (lw, lh), interpolation=cv2.INTER_AREA))
                self._base = levels[::-1]
            return self._base

    def _read_whole(self, w: int, h: int, ds: float, strip_px: int = 512) -> np.ndarray:
        """The whole slide as ``w`` x ``h`` px, read in horizontal strips (bounded memory)."""
        out = np.empty((h, w, 3), np.uint8)
        for y in range(0, h, strip_px):
            sh = min(strip_px, h - y)
            out[y:y + sh] = self._read(0, y, w, sh, ds)
        return out

    def encode(self, tile: np.ndarray, fmt: str = "jpeg", quality: int = 80) -> bytes:
        """``tile`` as JPEG (or PNG) bytes."""
        bgr = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", bgr,
                               [] if fmt == "png" else [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise DataError(f"could not encode a {tile.shape} tile as {fmt}")
        return buf.tobytes()
