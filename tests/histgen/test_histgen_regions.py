"""Region layouts: every real patch exactly once; 'spatial' regions are compact."""

import torch
from _histgen_helpers import grid_coords

from milkit.histgen.regions import hilbert_index, scan_layout, spatial_layout


def _covers_each_patch_once(layout, mask) -> None:
    placed = layout.patch_index[layout.slot_mask]
    expected = torch.arange(mask.numel()).view(mask.shape)[mask]
    assert torch.equal(placed.sort().values, expected.sort().values)


def test_scan_layout_packs_runs_of_patches_in_file_order() -> None:
    mask = torch.tensor([[True] * 7 + [False] * 2, [True] * 2 + [False] * 7])
    lay = scan_layout(mask, 3)
    _covers_each_patch_once(lay, mask)
    assert lay.patch_index.tolist() == [[0, 1, 2], [3, 4, 5], [6, 0, 0], [9, 10, 0]]
    assert lay.region_batch.tolist() == [0, 0, 0, 1] and lay.region_pos.tolist() == [0, 1, 2, 0]
    assert lay.region_mask.tolist() == [[True, True, True], [True, False, False]]


def test_hilbert_curve_visits_grid_neighbours_in_turn() -> None:
    x, y = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    d = hilbert_index(x.flatten(), y.flatten())
    assert sorted(d.tolist()) == list(range(256))
    path = torch.stack([x.flatten(), y.flatten()], 1)[d.argsort()]
    assert ((path[1:] - path[:-1]).abs().sum(1) == 1).all()


def test_spatial_regions_are_compact_blocks() -> None:
    coords = grid_coords(40 * 40, cols=40, step=512.0) + torch.tensor([3000.0, 777.0])
    mask = torch.ones(1, len(coords), dtype=torch.bool)
    for name, lay in (("spatial", spatial_layout(mask, coords[None], 95)), ("scan", scan_layout(mask, 95))):
        _covers_each_patch_once(lay, mask)
        cells = coords[lay.patch_index] / 512                          # r l 2
        full = lay.slot_mask.all(1)
        extent = (cells.amax(1) - cells.amin(1))[full].amax(1)         # longest side of each full region
        if name == "spatial":
            assert extent.median() <= 15 and extent.max() <= 20       # blocks of ~10 x 10 cells, not strips
        else:
            assert extent.min() >= 39                                  # scan: row-long strips
