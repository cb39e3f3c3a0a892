"""Tissue classes of the demo slides, their H&E-like palette, and the per-slide class layout.

The layout is a low-resolution class map: a few irregular tissue blobs on a glass background,
split into tissue classes by competing smooth random fields whose biases are tuned until the
class fractions match a target composition.
"""

from enum import IntEnum

import cv2
import numpy as np
from scipy import ndimage

SUBTYPES: tuple[str, ...] = ("adenocarcinoma", "squamous", "small_cell")
"""The three demo subtypes (the ``label`` column), in tumour-class order."""


class Tissue(IntEnum):
    """Classes of the demo class map; values index :data:`PALETTE`."""

    BACKGROUND = 0
    TUMOUR_ADENO = 1
    TUMOUR_SQUAMOUS = 2
    TUMOUR_SMALL_CELL = 3
    STROMA = 4
    LYMPHOCYTES = 5
    NECROSIS = 6
    FAT = 7


TUMOUR_OF_SUBTYPE: dict[str, Tissue] = {
    "adenocarcinoma": Tissue.TUMOUR_ADENO,
    "squamous": Tissue.TUMOUR_SQUAMOUS,
    "small_cell": Tissue.TUMOUR_SMALL_CELL,
}

COMPONENTS: tuple[str, ...] = ("tumour", "stroma", "lymphocytes", "necrosis", "fat")
"""Columns of ``composition.csv``: fractions of the tissue area (they sum to 1)."""

# Base (cytoplasm / matrix) colour of each class, RGB.
PALETTE = np.array(
    [
        (242, 241, 244),  # background glass
        (222, 168, 205),  # adenocarcinoma: pale purple-pink between glands
        (236, 150, 170),  # squamous: pink-orange eosinophilic cytoplasm
        (168, 120, 180),  # small cell: scant cytoplasm, bluish
        (234, 162, 192),  # stroma: pink collagen
        (226, 186, 212),  # lymphocytes: pale background between cells
        (240, 196, 214),  # necrosis: pale eosinophilic
        (250, 247, 250),  # fat: empty adipocytes
    ],
    dtype=np.float32,
)

GRID = 8
"""Level-0 pixels per cell of the layout map."""


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random field [rows, cols] float32, zero mean, unit std, correlation length ~``sigma``.

    White noise on a grid ``sigma / 2`` times coarser is blurred and interpolated up, which
    is much cheaper than blurring full-size noise with a wide kernel.
    """
    step = max(sigma / 2, 1.0)
    small = (max(int(shape[0] / step), 2) + 2, max(int(shape[1] / step), 2) + 2)
    noise = cv2.GaussianBlur(rng.standard_normal(small).astype(np.float32), (0, 0), 1.5)
    field = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def tissue_field(rng: np.random.Generator, shape: tuple[int, int], coverage: float) -> np.ndarray:
    """Irregular tissue blobs covering roughly ``coverage`` of a low-resolution grid.

    Args:
        rng: Random generator.
        shape: Grid shape (rows, cols).
        coverage: Wanted fraction of the grid covered by tissue.

    Returns:
        Float32 [rows, cols], positive on tissue; smooth, so its zero level set interpolates
        into smooth tissue borders.
    """
    h, w = shape
    yy, xx = np.ogrid[0:h, 0:w]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))  # separate fragments, side by side along the long axis
    along_x = w >= h
    score = np.full(shape, -np.inf, dtype=np.float32)
    for i in range(n):
        t, mid = (i + 0.5 + rng.uniform(-0.1, 0.1)) / n, 0.5 + rng.uniform(-0.05, 0.05)
        cy, cx = (mid * h, t * w) if along_x else (t * h, mid * w)
        half_y, half_x = (h / 2, w / (2 * n)) if along_x else (h / (2 * n), w / 2)
        ry, rx = half_y * rng.uniform(0.5, 0.85), half_x * rng.uniform(0.5, 0.85)
        theta = rng.uniform(0, np.pi) if n == 1 else rng.uniform(-0.3, 0.3)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        score = np.maximum(score, 1.0 - u * u - v * v)
    score += 0.45 * smooth_field(rng, shape, max(h, w) / 12) + 0.15 * smooth_field(rng, shape, max(h, w) / 40)
    score -= 4.0 * ((2 * yy / h - 1) ** 6 + (2 * xx / w - 1) ** 6)  # keep tissue off the slide edge
    score -= np.quantile(score, 1.0 - coverage)
    mask = score > 0
    labels, n = ndimage.label(mask)
    if n > 1:  # drop specks smaller than 2% of the tissue
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.02 * mask.sum()))
    mask = ndimage.binary_fill_holes(mask)
    score = np.where(mask, np.maximum(score, 1e-3), np.minimum(score, -1e-3))
    score[[0, -1], :], score[:, [0, -1]] = -1.0, -1.0
    return score.astype(np.float32)


def class_scores(
    rng: np.random.Generator, tissue: np.ndarray, tumour: Tissue, target: dict[str, float]
) -> np.ndarray:
    """Per-class score fields on the layout grid; ``argmax`` gives the class map.

    Biases are tuned so the argmax fractions on tissue (``tissue > 0``, from
    :func:`tissue_field`) match ``target`` (a composition over :data:`COMPONENTS`).

    Returns:
        Float32 [len(Tissue), rows, cols].
    """
    classes = [tumour, Tissue.STROMA, Tissue.LYMPHOCYTES, Tissue.NECROSIS, Tissue.FAT]
    mask = tissue > 0
    sigma = max(mask.shape) / 40
    fields = np.stack([smooth_field(rng, mask.shape, sigma) for _ in classes])
    fields[2] = 0.6 * fields[2] + 0.4 * smooth_field(rng, mask.shape, sigma / 3)  # lymphocytes: patchier
    want = np.array([target[c] for c in COMPONENTS], dtype=np.float64)
    bias = np.log(np.maximum(want, 1e-9))
    inside = fields[:, mask][:, ::3]  # a subsample is plenty to fit five biases
    for _ in range(40):
        pick = np.argmax(inside + bias[:, None].astype(np.float32), axis=0)
        got = np.bincount(pick, minlength=len(classes)) / max(pick.size, 1)
        present = want > 0
        bias[present] += 0.3 * (np.log(want[present]) - np.log(np.maximum(got[present], 1e-4)))
        bias[~present] = -1e3
    scores = np.full((len(Tissue), *mask.shape), -1e4, dtype=np.float32)
    for k, cls in enumerate(classes):
        scores[cls] = fields[k] + bias[k]
    scores[Tissue.BACKGROUND] = -1e4 * tissue
    return scores


def upsample_labels(scores: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Class maps from grid scores: full resolution [H, W] and quarter resolution, both uint8.

    Scores are interpolated to quarter resolution before the argmax, so borders are smooth
    curves rather than grid steps. Classes that never win on the grid are skipped.
    """
    h, w = size
    h4, w4 = (h + 3) // 4, (w + 3) // 4
    active = np.flatnonzero(np.bincount(np.argmax(scores, axis=0).ravel(), minlength=len(scores)))
    mid = np.stack([cv2.resize(scores[k], (w4, h4), interpolation=cv2.INTER_LINEAR) for k in active])
    coarse = active.astype(np.uint8)[np.argmax(mid, axis=0)]
    return cv2.resize(coarse, (w4 * 4, h4 * 4), interpolation=cv2.INTER_NEAREST)[:h, :w], coarse


def smooth_border(labels: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Replace the stepped tissue/glass border of a class map by the smooth zero level of ``tissue``.

    Args:
        labels: Full-resolution class map [H, W] uint8 (from :func:`upsample_labels`).
        tissue: Grid tissue field (from :func:`tissue_field`), interpolated up here.

    Returns:
        The class map with background exactly where the interpolated field is ≤ 0; pixels
        that become tissue take a neighbouring tissue class.
    """
    h, w = labels.shape
    half = cv2.resize(tissue, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_LINEAR)
    on_tissue = cv2.resize(cv2.compare(half, 0, cv2.CMP_GT), (w, h), interpolation=cv2.INTER_NEAREST)
    grown = cv2.dilate(labels, np.ones((9, 9), np.uint8))
    filled = cv2.copyTo(grown, cv2.compare(labels, int(Tissue.BACKGROUND), cv2.CMP_EQ), labels.copy())
    return cv2.bitwise_and(filled, on_tissue)


def composition(labels: np.ndarray, tumour: Tissue) -> dict[str, float]:
    """Measured fractions of the tissue area per component of :data:`COMPONENTS`."""
    counts = np.bincount(labels.ravel(), minlength=len(Tissue)).astype(np.float64)
    tissue = counts[1:].sum()
    order = [tumour, Tissue.STROMA, Tissue.LYMPHOCYTES, Tissue.NECROSIS, Tissue.FAT]
    return {c: float(counts[k] / tissue) if tissue else 0.0 for c, k in zip(COMPONENTS, order, strict=True)}
