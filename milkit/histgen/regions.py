"""Grouping a bag's patches into HistGen regions (packed across the batch, padding-free).

* ``scan``: runs of ``L`` consecutive real patches in storage order (HistGen: CLAM's x-major
  grid scan, so regions are thin vertical strips of the tissue).
* ``spatial``: runs of ``L`` real patches along a Hilbert curve through the level-0 patch grid
  (cell size estimated from the coordinates): compact neighbourhoods, as many regions as
  ``scan``, and independent of the order of the rows in the feature file.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RegionLayout:
    """Where every real patch sits: region r (packed over the batch), slot j < L.

    Attributes:
        patch_index: [R_tot, L] flat index ``b * N + n`` of the patch in each slot (0 if empty).
        slot_mask: [R_tot, L] True where the slot holds a real patch.
        region_batch: [R_tot] slide of each packed region.
        region_pos: [R_tot] index of the region within its slide.
        region_mask: [B, R_max] True for real regions.
    """

    patch_index: Tensor
    slot_mask: Tensor
    region_batch: Tensor
    region_pos: Tensor
    region_mask: Tensor


def _pack(mask: Tensor, region: Tensor, slot: Tensor, n_regions: Tensor, length: int) -> RegionLayout:
    """Build the layout from per-patch region/slot ids (only read where ``mask``)."""
    b, n = mask.shape
    dev = mask.device
    offset = torch.cumsum(n_regions, 0) - n_regions                  # b, first packed region per slide
    r_tot, r_max = int(n_regions.sum()), int(n_regions.max()) if b else 0
    flat = ((offset[:, None] + region) * length + slot)[mask]        # real patches' packed slot
    src = torch.arange(b * n, device=dev).view(b, n)[mask]
    patch_index = torch.zeros(r_tot * length, dtype=torch.long, device=dev)
    slot_mask = torch.zeros(r_tot * length, dtype=torch.bool, device=dev)
    patch_index[flat] = src
    slot_mask[flat] = True
    region_batch = torch.repeat_interleave(torch.arange(b, device=dev), n_regions)
    region_pos = torch.arange(r_tot, device=dev) - offset[region_batch]
    region_mask = torch.arange(r_max, device=dev)[None, :] < n_regions[:, None]
    return RegionLayout(patch_index.view(r_tot, length), slot_mask.view(r_tot, length), region_batch,
                        region_pos, region_mask)


def scan_layout(mask: Tensor, length: int) -> RegionLayout:
    """Regions = consecutive runs of ``length`` real patches in storage order."""
    rank = mask.long().cumsum(1) - 1                                  # b n, rank among real patches
    n_regions = (mask.sum(1) + length - 1) // length                  # b
    return _pack(mask, rank.clamp_min(0) // length, rank.clamp_min(0) % length, n_regions, length)


def _grid_step(values: Tensor) -> float:
    """Median gap between consecutive distinct coordinates (the patch stride); 1 if undefined."""
    u = torch.unique(values)
    gaps = u[1:] - u[:-1]
    return float(gaps.median()) if gaps.numel() else 1.0


def hilbert_index(x: Tensor, y: Tensor) -> Tensor:
    """Position of integer grid cells (x, y >= 0) along a Hilbert curve covering them."""
    side = 1 << max(1, int(torch.maximum(x.max(), y.max())).bit_length())
    x, y, d = x.clone(), y.clone(), torch.zeros_like(x)
    s = side // 2
    while s > 0:
        rx, ry = (x & s) > 0, (y & s) > 0
        d += s * s * ((3 * rx.long()) ^ ry.long())
        flip = ~ry & rx                                               # rotate the quadrant
        x, y = torch.where(flip, side - 1 - x, x), torch.where(flip, side - 1 - y, y)
        x, y = torch.where(~ry, y, x), torch.where(~ry, x, y)
        s //= 2
    return d


def spatial_layout(mask: Tensor, coords: Tensor, length: int) -> RegionLayout:
    """Regions = runs of ``length`` real patches along a Hilbert curve through the patch grid."""
    rank = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    for i in range(mask.shape[0]):
        if mask[i].any():
            xy = coords[i][mask[i]].double()
            step = torch.tensor([_grid_step(xy[:, 0]), _grid_step(xy[:, 1])], dtype=xy.dtype, device=xy.device)
            cell = torch.floor((xy - xy.min(0).values) / step + 0.5).long()              # n 2 grid cells
            order = torch.argsort(hilbert_index(cell[:, 0], cell[:, 1]), stable=True)
            r = torch.empty_like(order)
            r[order] = torch.arange(len(order), device=mask.device)
            rank[i, mask[i]] = r
    n_regions = (mask.sum(1) + length - 1) // length
    return _pack(mask, rank // length, rank % length, n_regions, length)
