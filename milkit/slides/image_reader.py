"""tifffile / Pillow backend for images OpenSlide does not read (stripped TIFF, OME-TIFF, PNG, JPEG).

Each pyramid level is held in memory (memory-mapped when the TIFF stores it uncompressed and
contiguous), so this backend suits small and medium images; use OpenSlide for large pyramids.
"""

import re
from pathlib import Path

import numpy as np

from milkit.errors import DataError
from milkit.slides.base import SlideReader

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".qptiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _as_rgb(arr: np.ndarray, axes: str) -> np.ndarray:
    if "S" in axes and axes.index("S") == 0 and arr.ndim == 3:  # planar: S Y X
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        elif arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        else:
            raise DataError(f"unsupported pixel type {arr.dtype}; convert the image to 8-bit RGB")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise DataError(f"unsupported image layout {arr.shape} ({axes}); expected RGB or grayscale")
    return arr


class ImageReader(SlideReader):
    """Plain images: TIFF (every level of ``series[0]``) via tifffile, other formats via Pillow."""

    backend = "tifffile"

    def __init__(self, path: Path | str, *, mpp_override: float | None = None) -> None:
        super().__init__(path)
        if self.path.name.lower().endswith(TIFF_SUFFIXES):
            self._open_tiff(mpp_override)
        else:
            self._open_pil(mpp_override)
        w0 = self.level_dimensions[0][0]
        self.level_downsamples = tuple(w0 / w for w, _ in self.level_dimensions)
        self.magnification = None

    def _open_tiff(self, mpp_override: float | None) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
            self._levels = list(series.levels)
            self._axes = series.axes
        except Exception as exc:
            raise DataError(f"tifffile cannot read {self.path}: {exc}") from exc
        yx = [(s.shape[self._axes.index("X")], s.shape[self._axes.index("Y")]) for s in self._levels]
        self.level_dimensions = tuple((int(w), int(h)) for w, h in yx)
        self._cache: dict[int, np.ndarray] = {}
        self._set_mpp(self._tiff_mpp(), "the TIFF resolution tags", mpp_override)

    def _tiff_mpp(self) -> float | None:
        if self._tif.is_ome and self._tif.ome_metadata:
            m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', self._tif.ome_metadata)
            unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', self._tif.ome_metadata)
            if m and (unit is None or unit.group(1) in ("µm", "um", "\u00b5m")):
                return float(m.group(1))
        page = self._tif.pages[0]
        res, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
        if res is None or unit is None or int(unit.value) not in (2, 3):
            return None
        num, den = res.value
        if not num or not den:
            return None
        px_per_unit = num / den
        return (25400.0 if int(unit.value) == 2 else 10000.0) / px_per_unit

    def _open_pil(self, mpp_override: float | None) -> None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(self.path) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise DataError(f"Pillow cannot read {self.path}: {exc}") from exc
        self._tif = None
        self._cache = {0: arr}
        self.level_dimensions = ((arr.shape[1], arr.shape[0]),)
        self.backend = "pillow"
        self._set_mpp(None, "the image file (PNG/JPEG carry none)", mpp_override)

    def _level(self, level: int) -> np.ndarray:
        if level not in self._cache:
            import tifffile

            page = self._levels[level]
            try:
                arr = tifffile.memmap(self.path, series=0, level=level, mode="r") if level == 0 and \
                    self._tif.pages[0].is_contiguous and page.keyframe.compression == 1 else page.asarray()
            except Exception:
                try:
                    arr = page.asarray()
                except Exception as exc:
                    raise DataError(f"tifffile failed decoding {self.path} level {level}: {exc}") from exc
            self._cache[level] = _as_rgb(np.asarray(arr), self._axes)
        return self._cache[level]

    def _read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        img = self._level(level)
        ds = self.level_downsamples[level]
        lx, ly = int(round(x0 / ds)), int(round(y0 / ds))
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        sx0, sy0 = max(lx, 0), max(ly, 0)
        sx1, sy1 = min(lx + w, img.shape[1]), min(ly + h, img.shape[0])
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - ly: sy1 - ly, sx0 - lx: sx1 - lx] = img[sy0:sy1, sx0:sx1]
        return out

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
        self._cache.clear()
