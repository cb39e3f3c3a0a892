"""Run an extractor over the tile blocks of several slides: worker processes read, the main process encodes."""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from milkit.extract.dataset import TileBlocks
from milkit.extractor import Extractor


def auto_workers(requested: int | None, n_blocks: int, device: torch.device) -> int:
    """``requested``, else reader processes for ``device``: on a GPU, one per core but one, up to 8
    (reading is then the bottleneck); on the CPU, one per 4 cores, up to 4 (a CPU encoder uses every
    core through its own threads, so on 2 cores reading in-process is faster: docs/benchmarks.md).
    0 for fewer than 4 blocks."""
    if requested is not None:
        return min(requested, n_blocks)
    if n_blocks < 4:
        return 0
    cores = os.cpu_count() or 1
    wanted = min(8, cores - 1) if device.type == "cuda" else min(4, cores // 4)
    return max(0, min(wanted, n_blocks))


@dataclass
class SlideResult:
    """Features of slide ``k`` of the dataset's jobs ([n_tiles, D] float32, row i = tile i of its
    plan), or the reason it failed."""

    k: int
    features: np.ndarray | None
    error: str = ""


@dataclass
class _Slide:
    feats: np.ndarray
    seen: np.ndarray
    idx: list[torch.Tensor] = field(default_factory=list)
    tiles: list[torch.Tensor] = field(default_factory=list)
    held: int = 0
    error: str = ""


@torch.inference_mode()
def encode_slides(dataset: TileBlocks, extractor: Extractor, *, batch_size: int, num_workers: int | None,
                  device: torch.device, on_tiles: Callable[[int, int], None] | None = None) -> Iterator[SlideResult]:
    """Encode every slide of ``dataset`` and yield one :class:`SlideResult` per slide, in order, as
    soon as its last block is encoded.

    Batches never mix slides: each slide's tiles are cut into batches of exactly ``batch_size`` in
    block order (the last may be short), so a slide's features do not depend on which other slides
    share the DataLoader. On CUDA: pinned host memory, non-blocking copies and bf16 autocast;
    reading overlaps compute through the worker processes and prefetching.
    ``on_tiles(k, n)`` is called after n more tiles of slide k are encoded.
    """
    workers = auto_workers(num_workers, len(dataset), device)
    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, pin_memory=cuda,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    threads = torch.get_num_threads()
    if not cuda and workers:  # leave the reader processes their cores
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - workers)))

    def encode(k: int, s: _Slide, n: int) -> None:
        idx, tiles = torch.cat(s.idx), torch.cat(s.tiles)
        s.idx, s.tiles, s.held = [idx[n:]], [tiles[n:]], s.held - n
        try:
            x = tiles[:n].to(device, non_blocking=cuda).permute(0, 3, 1, 2).float().div_(255)   # b 3 h w
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                out = extractor(x)                                                               # b d
            s.feats[idx[:n].numpy()] = out.float().cpu().numpy()
        except Exception as exc:  # this slide fails, the others go on
            s.error = f"slide {dataset.jobs[k].slide_id}: the encoder failed: {type(exc).__name__}: {exc}"
            return
        s.seen[idx[:n].numpy()] = True
        if on_tiles is not None:
            on_tiles(k, n)

    def finish(k: int, s: _Slide) -> SlideResult:
        if not s.error and s.held:
            encode(k, s, s.held)
        if s.error:
            return SlideResult(k, None, s.error)
        sid = dataset.jobs[k].slide_id
        if not s.seen.all():
            missing = int((~s.seen).sum())
            return SlideResult(k, None, f"slide {sid}: {missing} of {len(s.seen)} tiles were never encoded")
        if not np.isfinite(s.feats).all():
            return SlideResult(k, None, f"slide {sid}: the encoder produced NaN/Inf features; check the weights "
                                        "and inputs")
        return SlideResult(k, s.feats)

    current: tuple[int, _Slide] | None = None
    try:
        for item in loader:
            k = int(item["slide"])
            if current is None or current[0] != k:
                if current is not None:
                    yield finish(*current)
                n = dataset.jobs[k].n_tiles
                current = (k, _Slide(np.zeros((n, extractor.feature_dim), np.float32), np.zeros(n, bool)))
            s = current[1]
            if s.error:
                continue                                   # the rest of a failed slide is ignored
            if item["error"]:
                s.error = f"slide {dataset.jobs[k].slide_id}: reading tiles failed: {item['error']}"
                continue
            s.idx.append(torch.tensor(item["idx"], dtype=torch.int64))
            s.tiles.append(item["tiles"])
            s.held += len(item["idx"])
            while s.held >= batch_size and not s.error:
                encode(k, s, batch_size)
        if current is not None:
            yield finish(*current)
    finally:
        torch.set_num_threads(threads)
        dataset.close()
