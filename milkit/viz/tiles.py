"""The strip of highest- and lowest-scoring patches, read from the slide at level 0."""

from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from milkit.atomic import atomic_path
from milkit.slides import SlideReader

DISPLAY_PX = 192
"""Each tile is shown at most this many pixels wide (read at full resolution, then shrunk)."""


def read_tiles(reader: SlideReader, where: list[tuple[int, int, float]], patch_size: int) -> list[np.ndarray]:
    """Level-0 ``patch_size`` x ``patch_size`` RGB crops at each (x, y, _), shrunk to DISPLAY_PX."""
    tiles = []
    for x, y, _ in where:
        tile = reader.read_region(x, y, 0, patch_size, patch_size)                  # ps ps 3
        if patch_size > DISPLAY_PX:
            tile = cv2.resize(tile, (DISPLAY_PX, DISPLAY_PX), interpolation=cv2.INTER_AREA)
        tiles.append(tile)
    return tiles


def save_tile_strip(reader: SlideReader, top: list[tuple[int, int, float]], bottom: list[tuple[int, int, float]],
                    patch_size: int, path: Path) -> Path:
    """Two rows (top-k above, bottom-k below) composed into one image, each tile labelled with
    its rank, score and level-0 position (one ``imshow``, so it stays fast for any k)."""
    rows = [read_tiles(reader, top, patch_size), read_tiles(reader, bottom, patch_size)]
    side, gap, label = rows[0][0].shape[0], 8, 30
    k = max(len(r) for r in rows)
    mosaic = np.full((2 * (side + label + gap), k * (side + gap), 3), 255, np.uint8)
    fig = Figure(figsize=(max(mosaic.shape[1], 640) / 100, mosaic.shape[0] / 100 + 0.35), dpi=100, facecolor="white")
    ax = fig.add_axes((0, 0, 1, mosaic.shape[0] / (mosaic.shape[0] + 35)))
    for r, (name, tiles, where) in enumerate((("highest", rows[0], top), ("lowest", rows[1], bottom))):
        y = r * (side + label + gap) + label
        for i, (tile, (x0, y0, score)) in enumerate(zip(tiles, where)):
            x = i * (side + gap) + gap // 2
            mosaic[y:y + side, x:x + side] = tile
            ax.text(x + side / 2, y - 3, f"{name} #{i + 1}: {score:.3g}\n({x0}, {y0})", ha="center", va="bottom",
                    fontsize=6.5)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(f"highest (top row) and lowest (bottom row) scoring patches, read at level 0 ({patch_size} px)",
                 fontsize=8, y=0.995)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
