"""Patch coordinates (level-0 px, top-left) -> cells of the slide's tile grid, for slide encoders that
place patches by grid position (TITAN's 2D ALiBi, Prov-GigaPath's sin-cos position embedding)."""

import math

import torch
from torch import Tensor

from milkit.errors import DataError


def grid_step(coords: Tensor) -> float | None:
    """The tile size in level-0 px of one bag, read off its coords [n, 2]: the smallest non-zero spacing
    between distinct x or between distinct y values (``patch_size_level0`` for tiles cut edge to edge, as
    ``milkit extract`` does at its default stride); None when every patch has the same x and the same y."""
    gaps = [d[d > 0] for d in (coords[:, 0].unique().diff(), coords[:, 1].unique().diff())]
    found = [float(g.min()) for g in gaps if g.numel()]
    return min(found) if found else None


def grid_cells(coords: Tensor, patch_size_level0: int | None, *, who: str, from_corner: bool) -> Tensor:
    """coords [n, 2] (x, y) -> grid cells [n, 2] (long): ``floor((coords - offset) / step)``.

    ``step`` is ``patch_size_level0`` or, when None, the bag's :func:`grid_step`; ``offset`` is the bag's
    smallest x and y when ``from_corner`` (TITAN's ``preprocess_features``), else 0 (Prov-GigaPath's
    absolute ``coords_to_pos``), after rounding to whole pixels. A lone position lands in cell (0, 0); several
    patches at one position (feature files without coords read as zeros) raise DataError naming ``who``.
    """
    if coords.shape[0] == 0:
        return coords.new_zeros(0, 2, dtype=torch.long)
    coords = coords.round()                               # level-0 px are integers: no float noise at cell edges
    step = float(patch_size_level0) if patch_size_level0 is not None else grid_step(coords)
    if step is None and coords.shape[0] > 1:
        raise DataError(f"aggregator '{who}' places patches on the slide's tile grid by their coords, but all "
                        f"{coords.shape[0]} patches of a bag sit at {coords[0].tolist()}: feature files without "
                        "coords? Extract with `milkit extract`, which writes them")
    offset = coords.min(0).values if from_corner else torch.zeros_like(coords[0])
    return torch.div(coords - offset, step or math.inf, rounding_mode="floor").long()     # n 2


def sincos_2d(pos: Tensor, grid: int, dim: int) -> Tensor:
    """Prov-GigaPath's fixed 2D position embedding of grid positions ``pos`` (``x_cell * grid + y_cell``) [n] ->
    [n, dim]: row ``pos + 1`` of its ``get_2d_sincos_pos_embed(dim, grid, cls_token=True)`` table, computed
    on demand in float64 as numpy does: (sin, cos) of (pos % grid), then of (pos // grid), at frequencies
    10000^(-i / (dim/4))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device=pos.device) / (dim / 4))
    axes = [(p.double()[:, None] * omega) for p in (pos % grid, pos // grid)]   # n dim/4 each
    return torch.cat([f(a) for a in axes for f in (torch.sin, torch.cos)], 1)   # n dim
