"""cuCIM backend (optional; ``pip install cucim-cu12`` or the CPU-capable ``cucim``): SVS and TIFF."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from milkit.errors import DataError
from milkit.slides.base import SlideReader


def _find(meta: Any, key: str) -> Any:
    """First value stored under ``key`` anywhere in cuCIM's nested metadata dict."""
    if isinstance(meta, dict):
        if key in meta:
            return meta[key]
        for value in meta.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


class CuCIMReader(SlideReader):
    """Reads through ``cucim.CuImage`` (decoding on the CPU, as TRIDENT does)."""

    backend = "cucim"

    def __init__(self, path: Path | str, *, mpp_override: float | None = None) -> None:
        super().__init__(path)
        try:
            from cucim import CuImage
        except ImportError as exc:
            raise DataError("reader 'cucim' needs the cucim package (`pip install cucim-cu12`); "
                            "use reader = \"openslide\" otherwise") from exc
        try:
            self._img = CuImage(str(self.path))
        except Exception as exc:
            raise DataError(f"cuCIM cannot open {self.path}: {exc}") from exc
        res = self._img.resolutions
        self.level_dimensions = tuple((int(w), int(h)) for w, h in res["level_dimensions"])
        self.level_downsamples = tuple(float(d) for d in res["level_downsamples"])
        meta = self._img.metadata
        meta = json.loads(meta) if isinstance(meta, str) else meta
        mpp = _find(meta, "MPP")
        if mpp is None:
            units = [str(u) for u in self._img.spacing_units()]
            spacing = list(self._img.spacing())
            if units and units[0] in ("micrometer", "um", "µm") and spacing and spacing[0] > 0:
                mpp = spacing[0]
        self._set_mpp(float(mpp) if mpp is not None else None, "the cuCIM metadata", mpp_override)
        mag = _find(meta, "AppMag")
        self.magnification = float(mag) if mag else None

    def _read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        try:
            region = np.asarray(self._img.read_region(location=(x0, y0), size=(w, h), level=level))
        except Exception as exc:
            raise DataError(f"cuCIM failed reading {self.path} at ({x0}, {y0}) level {level}: {exc}") from exc
        if region.shape[-1] == 4:
            region = region[..., :3]
        return np.ascontiguousarray(region, dtype=np.uint8)

    def close(self) -> None:
        close = getattr(self._img, "close", None)
        if close is not None:
            close()
