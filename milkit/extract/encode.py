"""Run an extractor over a slide's tile blocks: worker processes read, the main process encodes."""

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from milkit.errors import DataError
from milkit.extract.dataset import TileBlocks
from milkit.extractor import Extractor


def auto_workers(requested: int | None, n_blocks: int) -> int:
    """``requested``, or up to 4 reader processes leaving one core for the encoder (0 for tiny slides)."""
    if requested is not None:
        return min(requested, n_blocks)
    if n_blocks < 4:
        return 0
    return min(4, max(0, (os.cpu_count() or 1) - 1), n_blocks)


def _batches(loader: DataLoader, batch_size: int, slide_id: str) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Re-chunk blocks into encoder batches of exactly ``batch_size`` tiles (the last may be short).
    Batch composition depends only on block order, so outputs are reproducible."""
    idx_buf: list[torch.Tensor] = []
    tile_buf: list[torch.Tensor] = []
    held = 0
    for item in loader:
        if item["error"]:
            raise DataError(f"slide {slide_id}: reading tiles failed: {item['error']}")
        idx_buf.append(item["idx"])
        tile_buf.append(item["tiles"])
        held += len(item["idx"])
        while held >= batch_size:
            idx, tiles = torch.cat(idx_buf), torch.cat(tile_buf)
            yield idx[:batch_size].numpy(), tiles[:batch_size]
            idx_buf, tile_buf, held = [idx[batch_size:]], [tiles[batch_size:]], held - batch_size
    if held:
        yield torch.cat(idx_buf).numpy(), torch.cat(tile_buf)


@torch.inference_mode()
def encode_blocks(dataset: TileBlocks, extractor: Extractor, *, n_tiles: int, batch_size: int,
                  num_workers: int | None, device: torch.device, slide_id: str,
                  on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Features [n_tiles, D] float32, row ``i`` for tile ``i`` of the plan.

    On CUDA: pinned host memory, non-blocking copies and bf16 autocast; reading overlaps compute
    through the DataLoader's worker processes and prefetching.
    """
    workers = auto_workers(num_workers, len(dataset))
    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, pin_memory=cuda,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    feats = np.zeros((n_tiles, extractor.feature_dim), dtype=np.float32)
    seen = np.zeros(n_tiles, dtype=bool)
    threads = torch.get_num_threads()
    if not cuda and workers:  # leave the reader processes their cores
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - workers)))
    try:
        _run(loader, extractor, device, batch_size, slide_id, feats, seen, on_batch)
    finally:
        torch.set_num_threads(threads)
        dataset.close()
    if not seen.all():
        raise DataError(f"slide {slide_id}: {int((~seen).sum())} of {n_tiles} tiles were never encoded")
    if not np.isfinite(feats).all():
        raise DataError(f"slide {slide_id}: the encoder produced NaN/Inf features; check the weights and inputs")
    return feats


def _run(loader: DataLoader, extractor: Extractor, device: torch.device, batch_size: int, slide_id: str,
         feats: np.ndarray, seen: np.ndarray, on_batch: Callable[[int], None] | None) -> None:
    cuda = device.type == "cuda"
    for idx, tiles in _batches(loader, batch_size, slide_id):
        x = tiles.to(device, non_blocking=cuda).permute(0, 3, 1, 2).float().div_(255)   # b 3 h w
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            out = extractor(x)                                                           # b d
        feats[idx] = out.float().cpu().numpy()
        seen[idx] = True
        if on_batch is not None:
            on_batch(len(idx))
