"""Tissue segmentation on a low-resolution copy of the slide (CLAM's HSV-saturation method).

Saturation channel -> median blur -> threshold (fixed or Otsu) -> morphological closing ->
contours and holes (OpenCV ``RETR_CCOMP``), filtered by area in units of a reference patch.
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from milkit.slides.base import SlideReader


@dataclass(frozen=True)
class SegmentationParams:
    """Segmentation knobs (CLAM's names in brackets)."""

    downsample: float = 64.0          # level-0 px per mask px, at most (seg_level -1)
    max_side_px: int = 8192           # cap on the mask's longer side
    sthresh: int = 8                  # saturation threshold 0-255 (sthresh)
    use_otsu: bool = False            # Otsu threshold instead of sthresh (use_otsu)
    median_blur: int = 7              # odd kernel size (mthresh)
    close_px: int = 4                 # closing kernel size, 0 = off (close)
    min_area: float = 4.0             # min net tissue area, in reference patches (a_t)
    min_hole_area: float = 2.0        # min hole area, in reference patches (a_h)
    max_holes: int = 8                # holes kept per contour, largest first (max_n_holes)


@dataclass
class TissueSegmentation:
    """Tissue mask at low resolution plus contours and holes in level-0 (x, y) pixels."""

    mask: np.ndarray                    # h w uint8, 1 = tissue
    scale: tuple[float, float]          # level-0 px per mask px along x and y
    thumbnail: np.ndarray               # h w 3 uint8, the image that was segmented
    threshold: float                    # saturation threshold used
    contours: list[np.ndarray] = field(default_factory=list)     # each [k, 2] level-0
    holes: list[list[np.ndarray]] = field(default_factory=list)  # per contour, each [k, 2]

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fraction_in_boxes(self, xy: np.ndarray, size: int) -> np.ndarray:
        """Share of tissue inside each level-0 box (top-left ``xy`` [n, 2], side ``size``) -> [n]."""
        return mask_fraction_in_boxes(self.mask, self.scale, xy, size)


def mask_fraction_in_boxes(mask: np.ndarray, scale: tuple[float, float], xy: np.ndarray, size: int) -> np.ndarray:
    """Share of a 0/1 ``mask`` (pixels ``scale`` level-0 px each) inside each level-0 box (top-left
    ``xy`` [n, 2], side ``size``) -> [n], from an integral image."""
    if len(xy) == 0:
        return np.zeros(0)
    integral = cv2.integral(mask, sdepth=cv2.CV_32S if mask.size < 2**31 else cv2.CV_64F)  # (h+1) (w+1)
    h, w = mask.shape
    sx, sy = scale
    x0 = np.clip(np.floor(xy[:, 0] / sx + 0.5).astype(int), 0, w - 1)
    y0 = np.clip(np.floor(xy[:, 1] / sy + 0.5).astype(int), 0, h - 1)
    x1 = np.clip(np.maximum(x0 + 1, np.floor((xy[:, 0] + size) / sx + 0.5).astype(int)), 1, w)
    y1 = np.clip(np.maximum(y0 + 1, np.floor((xy[:, 1] + size) / sy + 0.5).astype(int)), 1, h)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return total / ((x1 - x0) * (y1 - y0))


def segmentation_downsample(dims: tuple[int, int], params: SegmentationParams, ref_patch_px: float) -> float:
    """Downsample for the mask: ``params.downsample``, finer for small slides or small tiles
    (a tile spans >= 4 mask px, the longer side >= 1024 px), never above ``max_side_px``."""
    longest = max(dims)
    ds = min(params.downsample, ref_patch_px / 4, longest / 1024)
    return max(1.0, ds, longest / params.max_side_px)


def segment_tissue(reader: SlideReader, params: SegmentationParams, *, ref_patch_px: float = 512) -> TissueSegmentation:
    """Segment ``reader``'s slide. ``ref_patch_px`` is the reference patch side in level-0 px."""
    ds = segmentation_downsample(reader.dimensions, params, ref_patch_px)
    img = reader.read_downsampled(ds)
    w0, h0 = reader.dimensions
    return segment_image(img, params, scale=(w0 / img.shape[1], h0 / img.shape[0]), ref_patch_px=ref_patch_px)


def segment_image(img: np.ndarray, params: SegmentationParams, *, scale: tuple[float, float],
                  ref_patch_px: float) -> TissueSegmentation:
    """Segment an RGB image whose pixels are ``scale`` (x, y) level-0 px each."""
    sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1]
    if params.median_blur > 1:
        sat = cv2.medianBlur(sat, params.median_blur | 1)
    if params.use_otsu:
        thr, binary = cv2.threshold(sat, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        thr, binary = cv2.threshold(sat, params.sthresh, 1, cv2.THRESH_BINARY)
    if params.close_px > 0:
        kernel = np.ones((params.close_px, params.close_px), np.uint8)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    ref_area = ref_patch_px**2 / (scale[0] * scale[1])                 # one reference patch, mask px
    kept: list[tuple[np.ndarray, list[np.ndarray]]] = []
    if hierarchy is not None:
        hier = hierarchy[0]                                            # k 4: next prev child parent
        for i in np.flatnonzero(hier[:, 3] == -1):
            holes = [contours[j] for j in np.flatnonzero(hier[:, 3] == i)]
            net = cv2.contourArea(contours[i]) - sum(cv2.contourArea(h) for h in holes)
            if net <= 0 or net <= params.min_area * ref_area:
                continue
            holes = [h for h in holes if cv2.contourArea(h) > params.min_hole_area * ref_area]
            holes = sorted(holes, key=cv2.contourArea, reverse=True)[: params.max_holes]
            kept.append((contours[i], holes))
    kept.sort(key=lambda ch: cv2.contourArea(ch[0]), reverse=True)    # islands in holes drawn last
    mask = np.zeros(binary.shape, np.uint8)
    for outer, holes in kept:
        cv2.drawContours(mask, [outer], -1, 1, thickness=cv2.FILLED)
        if holes:
            cv2.drawContours(mask, holes, -1, 0, thickness=cv2.FILLED)
    to_l0 = np.array(scale, dtype=np.float64)

    def level0(c: np.ndarray) -> np.ndarray:
        return (c.reshape(-1, 2).astype(np.float64) + 0.5) * to_l0    # pixel centres, level-0 x y

    return TissueSegmentation(
        mask=mask, scale=(float(scale[0]), float(scale[1])), thumbnail=img, threshold=float(thr),
        contours=[level0(o) for o, _ in kept], holes=[[level0(h) for h in hs] for _, hs in kept],
    )
