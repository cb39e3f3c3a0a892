"""OpenSlide backend (openslide-python + openslide-bin): SVS, NDPI, MRXS, SCN, DICOM, generic TIFF, ..."""

from pathlib import Path

import numpy as np

from milkit.errors import DataError
from milkit.slides.base import SlideReader, rgba_to_rgb


class OpenSlideReader(SlideReader):
    """Reads any format OpenSlide detects. mpp from ``openslide.mpp-x``/``-y`` (their mean),
    magnification from ``openslide.objective-power``."""

    backend = "openslide"

    def __init__(self, path: Path | str, *, mpp_override: float | None = None) -> None:
        import openslide

        super().__init__(path)
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise DataError(f"OpenSlide cannot open {self.path}: {exc}") from exc
        props = self._slide.properties
        self.level_dimensions = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        mpps = [float(props[k]) for k in ("openslide.mpp-x", "openslide.mpp-y") if props.get(k)]
        file_mpp = sum(mpps) / len(mpps) if mpps else None
        vendor = props.get("openslide.vendor", "unknown")
        self._set_mpp(file_mpp, f"the {vendor} metadata (openslide.mpp-x)", mpp_override)
        power = props.get("openslide.objective-power")
        self.magnification = float(power) if power else None

    def _read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        import openslide

        try:
            region = self._slide.read_region((x0, y0), level, (w, h))
        except openslide.OpenSlideError as exc:
            raise DataError(f"OpenSlide failed reading {self.path} at ({x0}, {y0}) level {level}: {exc}") from exc
        return rgba_to_rgb(np.asarray(region))

    def close(self) -> None:
        self._slide.close()
