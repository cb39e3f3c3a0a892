"""A white stand-in slide, for runs whose slide files are not at hand: the attention overlay, patches
and contours are then shown on a canvas sized from the patch coordinates (as ``milkit heatmap`` does)."""

import math
from pathlib import Path
from typing import ClassVar

import numpy as np

from milkit.slides import SlideReader


class BlankSlide(SlideReader):
    """A white ``width`` x ``height`` px slide with a 4x pyramid (so every read is small)."""

    backend: ClassVar[str] = "blank"

    def __init__(self, slide_id: str, width: int, height: int) -> None:
        super().__init__(Path(f"{slide_id}.blank"))
        self.slide_id = slide_id
        dims, ds = [], 1
        while True:
            dims.append((max(1, math.ceil(width / ds)), max(1, math.ceil(height / ds))))
            if max(dims[-1]) <= 512:
                break
            ds *= 4
        self.level_dimensions = tuple(dims)
        self.level_downsamples = tuple(float(4 ** i) for i in range(len(dims)))
        self.mpp, self.mpp_note, self.magnification = None, "blank canvas: no slide file", None

    def _read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        return np.full((h, w, 3), 255, np.uint8)
