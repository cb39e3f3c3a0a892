"""Synthetic pyramidal TIFF slides for extraction tests (tifffile; OpenSlide reads them as generic-tiff)."""

from pathlib import Path

import cv2
import numpy as np
import tifffile


def make_slide(path: Path, *, size: tuple[int, int] = (1024, 768), mpp: float | None = 0.5,
               seed: int = 0, levels: int = 3) -> Path:
    """H&E-like blobs on glass: pink stroma with purple nuclei, a hole in the big blob, a speck."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.full((h, w, 3), 242, np.uint8)
    blob = np.zeros((h, w), np.uint8)
    cv2.ellipse(blob, (w // 3, h // 2), (w // 5, h // 3), 15, 0, 360, 1, -1)
    cv2.circle(blob, (int(w * 0.75), int(h * 0.4)), min(w, h) // 6, 1, -1)
    cv2.circle(blob, (w // 3, h // 2), min(w, h) // 12, 0, -1)            # a hole
    cv2.circle(blob, (int(w * 0.9), int(h * 0.9)), 3, 1, -1)              # a speck (filtered)
    noise = rng.normal(0, 8, (h, w, 1))
    tissue = np.clip(np.array([232, 160, 196]) + noise, 0, 255).astype(np.uint8)
    img[blob > 0] = tissue[blob > 0]
    ys, xs = np.nonzero(blob)
    pick = rng.choice(len(xs), size=len(xs) // 400, replace=False)
    for x, y in zip(xs[pick], ys[pick], strict=True):
        cv2.circle(img, (int(x), int(y)), 3, (120, 70, 160), -1)
    kwargs = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    if mpp is not None:
        kwargs.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            f = 2**level
            arr = img if f == 1 else cv2.resize(img, (w // f, h // f), interpolation=cv2.INTER_AREA)
            extra = {} if level == 0 else {"subfiletype": 1}
            if mpp is not None and level:
                extra["resolution"] = (1e4 / (mpp * f), 1e4 / (mpp * f))
            tif.write(arr, **{**kwargs, **extra})
    return path
