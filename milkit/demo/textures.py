"""Procedural H&E-like textures drawn with OpenCV onto a slide canvas, one function per tissue class.

Sizes are level-0 pixels at 0.5 µm/px: a lymphocyte nucleus is ~7 µm (14 px) across, a gland
~80 µm, an adipocyte ~55 µm. Every drawer paints only shapes centred on pixels of its class;
random parameters are drawn in vectors, the Python loops only call OpenCV.
"""

from collections.abc import Callable

import cv2
import numpy as np

from milkit.demo.tissue import Tissue

Drawer = Callable[[np.ndarray, np.ndarray, np.random.Generator], None]


def _points(rng: np.random.Generator, labels: np.ndarray, cls: int, spacing: float, keep: float = 1.0) -> np.ndarray:
    """Jittered-grid points [N, 2] int (x, y) that fall on pixels of class ``cls``."""
    h, w = labels.shape
    ys, xs = np.mgrid[spacing / 2 : h : spacing, spacing / 2 : w : spacing]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    pts += rng.uniform(-0.45 * spacing, 0.45 * spacing, pts.shape)
    pts = np.clip(pts, 0, [w - 1, h - 1]).astype(np.int32)
    pts = pts[labels[pts[:, 1], pts[:, 0]] == cls]
    return pts[rng.random(len(pts)) < keep]


def _colours(rng: np.random.Generator, rgb: tuple[int, int, int], n: int, spread: float) -> list[tuple[int, ...]]:
    """``n`` shades of ``rgb`` (intensity factor in 1 ± spread, a little per-channel noise), from 16 variants."""
    scale = 1.0 + rng.uniform(-spread, spread, (16, 1))
    shades = np.clip(np.asarray(rgb, np.float64) * scale + rng.normal(0, 4, (16, 3)), 0, 255).astype(np.int32)
    variants = [tuple(c) for c in shades.tolist()]
    return [variants[i] for i in rng.integers(16, size=n).tolist()]


def draw_adenocarcinoma(canvas: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Glands: purple epithelium rings with pale lumens, dense elongated nuclei around the lumen."""
    pts = _points(rng, labels, Tissue.TUMOUR_ADENO, 100)
    a = rng.uniform(34, 50, len(pts))
    b, ang = a * rng.uniform(0.6, 1.0, len(pts)), rng.uniform(0, 180, len(pts))
    cyto = _colours(rng, (194, 118, 186), len(pts), 0.05)
    for (x, y), ai, bi, th, col in zip(pts.tolist(), a, b, ang, cyto, strict=True):
        cv2.ellipse(canvas, (x, y), (int(ai), int(bi)), th, 0, 360, col, -1)
        cv2.ellipse(canvas, (x, y), (int(ai * 0.42), int(bi * 0.42)), th, 0, 360, (246, 236, 244), -1)
        n = int(2 * np.pi * ai * 0.72 / 7)
        t = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)
        c, s = np.cos(np.radians(th)), np.sin(np.radians(th))
        r = rng.uniform(0.62, 0.8, n)
        ex, ey = r * ai * np.cos(t), r * bi * np.sin(t)
        centres = np.stack([x + ex * c - ey * s, y + ex * s + ey * c], axis=1).astype(np.int32).tolist()
        for (px, py), tt, nc in zip(centres, (np.degrees(t) + th).tolist(), _colours(rng, (76, 38, 126), n, 0.15)):
            cv2.ellipse(canvas, (px, py), (6, 3), tt, 0, 360, nc, -1)


def draw_squamous(canvas: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Sheets of large polygonal pink cells with round vesicular nuclei and keratin pearls."""
    pts = _points(rng, labels, Tissue.TUMOUR_SQUAMOUS, 34).tolist()
    radii = rng.integers(19, 25, len(pts)).tolist()
    rims, cells = _colours(rng, (212, 122, 158), len(pts), 0.04), _colours(rng, (238, 152, 172), len(pts), 0.04)
    for (x, y), r, rim, cell in zip(pts, radii, rims, cells, strict=True):
        cv2.circle(canvas, (x, y), r, rim, 2)
        cv2.circle(canvas, (x, y), r - 2, cell, -1)
    pts = _points(rng, labels, Tissue.TUMOUR_SQUAMOUS, 34).tolist()
    radii = rng.integers(6, 10, len(pts)).tolist()
    outer, inner = _colours(rng, (118, 64, 140), len(pts), 0.1), _colours(rng, (152, 98, 170), len(pts), 0.1)
    for (x, y), r, c_out, c_in in zip(pts, radii, outer, inner, strict=True):
        cv2.circle(canvas, (x, y), r, c_out, -1)
        cv2.circle(canvas, (x, y), r - 3, c_in, -1)
        cv2.circle(canvas, (x + 1, y), 1, (70, 30, 90), -1)
    for x, y in _points(rng, labels, Tissue.TUMOUR_SQUAMOUS, 420, keep=0.6).tolist():
        for r in range(int(rng.uniform(40, 70)), 4, -7):  # keratin pearl: concentric eosinophilic whorls
            cv2.circle(canvas, (x, y), r, _colours(rng, (242, 130, 136), 1, 0.05)[0], 4)


def draw_small_cell(canvas: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Densely packed small dark round-to-oval nuclei with scant cytoplasm."""
    pts = _points(rng, labels, Tissue.TUMOUR_SMALL_CELL, 11).tolist()
    radii = rng.integers(4, 7, len(pts)).tolist()
    for (x, y), r, col in zip(pts, radii, _colours(rng, (52, 34, 102), len(pts), 0.2), strict=True):
        cv2.circle(canvas, (x, y), r, col, -1)


def draw_stroma(canvas: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Wavy pink collagen fibres with sparse spindle-shaped fibroblast nuclei along them."""
    base = rng.uniform(0, np.pi)

    def direction(p: np.ndarray) -> np.ndarray:
        return base + 0.5 * np.sin(p[:, 0] / 300.0 + p[:, 1] / 450.0)

    pts = _points(rng, labels, Tissue.STROMA, 16)
    theta = direction(pts) + rng.normal(0, 0.12, len(pts))
    half = rng.uniform(20, 45, len(pts))
    d = np.stack([np.cos(theta) * half, np.sin(theta) * half], axis=1)
    ends = np.concatenate([pts - d, pts + d], axis=1).astype(np.int32).tolist()
    dark, light = _colours(rng, (214, 118, 162), len(pts), 0.05), _colours(rng, (246, 198, 218), len(pts), 0.03)
    for (x0, y0, x1, y1), is_dark, cd, cl in zip(ends, rng.random(len(pts)) < 0.5, dark, light, strict=True):
        cv2.line(canvas, (x0, y0), (x1, y1), cd if is_dark else cl, 2)
    pts = _points(rng, labels, Tissue.STROMA, 48)
    angles = np.degrees(direction(pts)).tolist()
    for (x, y), ang, col in zip(pts.tolist(), angles, _colours(rng, (92, 50, 132), len(pts), 0.1), strict=True):
        cv2.ellipse(canvas, (x, y), (9, 2), ang, 0, 360, col, -1)


def draw_lymphocytes(canvas: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Crowded small round very dark lymphocyte nuclei."""
    pts = _points(rng, labels, Tissue.LYMPHOCYTES, 10, keep=0.85).tolist()
    radii = rng.integers(3, 6, len(pts)).tolist()
    for (x, y), r, col in zip(pts, radii, _colours(rng, (44, 28, 92), len(pts), 0.15), strict=True):
        cv2.circle(canvas, (x, y), r, col, -1)


def draw_necrosis(canvas: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Pale eosinophilic ghost cells with scattered dark nuclear debris (karyorrhexis)."""
    pts = _points(rng, labels, Tissue.NECROSIS, 26).tolist()
    radii = rng.integers(8, 16, len(pts)).tolist()
    for (x, y), r, col in zip(pts, radii, _colours(rng, (232, 180, 206), len(pts), 0.04), strict=True):
        cv2.circle(canvas, (x, y), r, col, -1)
    pts = _points(rng, labels, Tissue.NECROSIS, 12, keep=0.45).tolist()
    radii = rng.integers(1, 4, len(pts)).tolist()
    for (x, y), r, col in zip(pts, radii, _colours(rng, (112, 70, 142), len(pts), 0.2), strict=True):
        cv2.circle(canvas, (x, y), r, col, -1)


def draw_fat(canvas: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Empty polygonal adipocytes (a Voronoi tessellation) with thin pink membranes."""
    ys, xs = np.nonzero(labels[::16, ::16] == Tissue.FAT)
    if len(xs) == 0:
        return
    h, w = labels.shape
    x0, y0 = max(int(xs.min()) * 16 - 200, 0), max(int(ys.min()) * 16 - 200, 0)
    x1, y1 = min(int(xs.max()) * 16 + 216, w), min(int(ys.max()) * 16 + 216, h)
    pts = _points(rng, labels[y0:y1, x0:x1], Tissue.FAT, 110) + [x0, y0]
    if len(pts) < 2:
        return
    subdiv = cv2.Subdiv2D((x0, y0, x1 - x0, y1 - y0))
    subdiv.insert([(float(x), float(y)) for x, y in pts])
    facets, _ = subdiv.getVoronoiFacetList([])
    membranes = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.polylines(membranes, [np.round(f - [x0, y0]).astype(np.int32) for f in facets], True, 255, 2)
    on = (membranes > 0) & (labels[y0:y1, x0:x1] == Tissue.FAT)
    canvas[y0:y1, x0:x1][on] = _colours(rng, (214, 146, 184), 1, 0.04)[0]


DRAWERS: dict[Tissue, Drawer] = {
    Tissue.FAT: draw_fat,
    Tissue.STROMA: draw_stroma,
    Tissue.NECROSIS: draw_necrosis,
    Tissue.LYMPHOCYTES: draw_lymphocytes,
    Tissue.TUMOUR_ADENO: draw_adenocarcinoma,
    Tissue.TUMOUR_SQUAMOUS: draw_squamous,
    Tissue.TUMOUR_SMALL_CELL: draw_small_cell,
}
"""Drawing order: background classes first, so tumour and lymphocytes sit on top at borders."""
