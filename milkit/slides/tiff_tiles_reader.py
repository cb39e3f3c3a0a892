"""Tiled TIFF pyramids (Aperio SVS, generic tiled TIFF) decoded tile by tile with tifffile + imagecodecs.

OpenSlide supplies the metadata (levels, downsamples, mpp, objective power: exactly what
:class:`OpenSlideReader` reports); the pixels come from decoding only the TIFF tiles a region
touches, straight from the file with libjpeg-turbo / OpenJPEG / zlib. At each level's own pixel
grid the result is identical to OpenSlide's, but it skips OpenSlide's ARGB compositing and
premultiplied-alpha conversion, which cost more than the decoding itself (see
docs/benchmarks.md). Levels whose storage is not handled here (other compressions, planar or
non-8-bit samples, Aperio's YCbCr JPEG 2000) are read through OpenSlide.
"""

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from milkit.errors import DataError
from milkit.slides.openslide_reader import OpenSlideReader

VENDORS = ("aperio", "generic-tiff")
"""OpenSlide formats whose pyramid levels are plain tiled TIFF pages, one page per level."""

COMPRESSIONS = frozenset({1, 5, 7, 8, 32946, 33005, 50000})
"""none, LZW, JPEG, deflate (Adobe and old), Aperio JPEG 2000 RGB, zstd."""

TILE_CACHE_MB = 32
"""Decoded tiles kept per reader (OpenSlide's default cache is 32 MiB too)."""


def _decodable(page: Any) -> bool:
    return (page.is_tiled and page.planarconfig == 1 and page.bitspersample == 8 and page.samplesperpixel in (3, 4)
            and int(page.compression) in COMPRESSIONS and page.photometric in (2, 6)
            and (page.photometric == 2 or int(page.compression) == 7))   # YCbCr only as JPEG's own colour space


class TiffTilesReader(OpenSlideReader):
    """A slide OpenSlide recognises as Aperio or generic TIFF, with tifffile decoding its tiles."""

    backend = "tiff-tiles"

    def __init__(self, path: Path | str, *, mpp_override: float | None = None) -> None:
        import tifffile

        super().__init__(path, mpp_override=mpp_override)
        try:
            self._tif = tifffile.TiffFile(self.path)
            levels = list(self._tif.series[0].levels)
        except Exception as exc:
            self._slide.close()
            raise DataError(f"tifffile cannot parse {self.path}: {exc}") from exc
        self._fd = os.open(self.path, os.O_RDONLY)
        self._pages: list[Any] = [None] * self.level_count      # None: this level reads through OpenSlide
        for i, (w, h) in enumerate(self.level_dimensions):
            page = levels[i].keyframe if i < len(levels) else None
            if page is not None and (page.imagewidth, page.imagelength) == (w, h) and _decodable(page):
                self._pages[i] = page
        self._cache: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._cache_bytes = 0

    @property
    def decoded_levels(self) -> list[int]:
        """Levels decoded here (the rest go through OpenSlide)."""
        return [i for i, p in enumerate(self._pages) if p is not None]

    def _tile(self, level: int, index: int) -> np.ndarray | None:
        """Decoded tile ``index`` of ``level`` as tile_h x tile_w x 3 uint8; None when the file has no
        data for it (sparse TIFF: reads as white, as in OpenSlide)."""
        key = (level, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        page = self._pages[level]
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        tile = None
        if count:
            data = os.pread(self._fd, count, offset)
            try:
                if len(data) != count:
                    raise ValueError(f"file ends {count - len(data)} bytes early")
                segment = page.decode(data, index, jpegtables=page.jpegtables)[0]
                tile = np.ascontiguousarray(segment.reshape(page.tilelength, page.tilewidth, -1)[..., :3])
            except Exception as exc:
                raise DataError(f"cannot decode tile {index} of level {level} in {self.path} "
                                f"({type(exc).__name__}: {exc}); the file may be truncated or corrupt") from exc
        self._cache[key] = tile
        self._cache_bytes += 0 if tile is None else tile.nbytes
        while self._cache_bytes > TILE_CACHE_MB << 20 and len(self._cache) > 1:
            old = self._cache.popitem(last=False)[1]
            self._cache_bytes -= 0 if old is None else old.nbytes
        return tile

    def _read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        page = self._pages[level]
        if page is None:
            return super()._read(x0, y0, level, w, h)
        ds = self.level_downsamples[level]
        lx, ly = round(x0 / ds), round(y0 / ds)                   # region's top-left in level pixels
        W, H = self.level_dimensions[level]
        tw, th = page.tilewidth, page.tilelength
        across = -(-W // tw)
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        for ty in range(max(ly, 0) // th, min(ly + h, H) // th + 1):
            for tx in range(max(lx, 0) // tw, min(lx + w, W) // tw + 1):
                if tx * tw >= min(lx + w, W) or ty * th >= min(ly + h, H):
                    continue
                tile = self._tile(level, ty * across + tx)
                if tile is None:
                    continue
                # overlap of the tile (clipped to the image) with the region, in level pixels
                sx0, sy0 = max(lx, tx * tw), max(ly, ty * th)
                sx1, sy1 = min(lx + w, (tx + 1) * tw, W), min(ly + h, (ty + 1) * th, H)
                out[sy0 - ly: sy1 - ly, sx0 - lx: sx1 - lx] = tile[sy0 - ty * th: sy1 - ty * th,
                                                                   sx0 - tx * tw: sx1 - tx * tw]
        return out

    def close(self) -> None:
        self._cache.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tif.close()
        super().close()
