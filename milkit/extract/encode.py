"""Run an extractor over the tile blocks of several slides: worker processes read, the main process encodes."""

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from milkit.extract.dataset import TileBlocks
from milkit.extract.stain import StainNormalizer
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
    """Features of slide ``k`` of the dataset's jobs, per encoder index of the job
    (``{e: [n_tiles, D_e] float32}``, row i = tile i of its plan), or the reason it failed; with stain
    normalisation, ``unnormalised[e]`` counts the tiles encoder e saw unnormalised (too little stain)."""

    k: int
    features: dict[int, np.ndarray] | None
    error: str = ""
    unnormalised: dict[int, int] = field(default_factory=dict)


@dataclass
class _Slide:
    feats: dict[int, np.ndarray]
    seen: np.ndarray
    idx: list[torch.Tensor] = field(default_factory=list)
    tiles: list[dict[int, torch.Tensor]] = field(default_factory=list)
    held: int = 0
    error: str = ""
    unnormalised: dict[int, torch.Tensor] = field(default_factory=dict)   # per input side, on the device


@torch.inference_mode()
def encode_slides(dataset: TileBlocks, extractors: Sequence[Extractor], *, batch_size: int,
                  num_workers: int | None, device: torch.device,
                  on_tiles: Callable[[int, int], None] | None = None,
                  stain: StainNormalizer | None = None) -> Iterator[SlideResult]:
    """Encode every slide of ``dataset`` with the encoders its job names (``job.encoders``, indices into
    ``extractors``) and yield one :class:`SlideResult` per slide, in order, as soon as its last block
    is encoded. Tiles are read once and fed to every encoder (each at its own input side).

    Batches never mix slides: each slide's tiles are cut into batches of exactly ``batch_size`` in
    block order (the last may be short), so a slide's features do not depend on which other slides
    share the DataLoader, nor on which other encoders run. On CUDA: pinned host memory, non-blocking
    copies and bf16 autocast; reading overlaps compute through the worker processes and prefetching.
    ``on_tiles(k, n)`` is called after n more tiles of slide k are encoded. ``stain`` normalises each
    batch once per input side, on ``device``, before any encoder sees it (all encoders share the result).
    """
    workers = auto_workers(num_workers, len(dataset), device)
    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, pin_memory=cuda,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    threads = torch.get_num_threads()
    if not cuda and workers:  # leave the reader processes their cores
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - workers)))

    def encode(k: int, s: _Slide, n: int) -> None:
        idx = torch.cat(s.idx)
        tiles = {px: torch.cat([t[px] for t in s.tiles]) for px in s.tiles[0]}
        s.idx, s.tiles, s.held = [idx[n:]], [{px: t[n:] for px, t in tiles.items()}], s.held - n
        rows = idx[:n].numpy()
        inputs: dict[int, torch.Tensor] = {}
        for e in dataset.jobs[k].encoders:
            extractor = extractors[e]
            px = extractor.tile_size_px
            if px not in inputs and stain is not None:
                try:
                    inputs[px], normalised = stain(tiles[px][:n].to(device, non_blocking=cuda))   # b 3 h w
                except Exception as exc:  # this slide fails, the others go on
                    s.error = (f"slide {dataset.jobs[k].slide_id}: {stain.method} stain normalisation failed: "
                               f"{type(exc).__name__}: {exc}")
                    return
                s.unnormalised[px] = s.unnormalised.get(px, 0) + (~normalised).sum()
            try:
                if px not in inputs:
                    inputs[px] = tiles[px][:n].to(device, non_blocking=cuda).permute(0, 3, 1, 2).float().div_(255)
                x = inputs[px]                                                                 # b 3 h w
                if cuda and extractor.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                    out = extractor(x)                                                         # b d
                s.feats[e][rows] = out.float().cpu().numpy()
            except Exception as exc:  # this slide fails, the others go on
                s.error = (f"slide {dataset.jobs[k].slide_id}: the encoder '{extractor.name}' failed: "
                           f"{type(exc).__name__}: {exc}")
                return
        s.seen[rows] = True
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
        bad = [extractors[e].name for e, f in s.feats.items() if not np.isfinite(f).all()]
        if bad:
            return SlideResult(k, None, f"slide {sid}: the encoder '{bad[0]}' produced NaN/Inf features; check "
                                        "the weights and inputs")
        unnormalised = {e: int(s.unnormalised.get(extractors[e].tile_size_px, 0)) for e in s.feats} if stain else {}
        return SlideResult(k, s.feats, unnormalised=unnormalised)

    current: tuple[int, _Slide] | None = None
    try:
        for item in loader:
            k = int(item["slide"])
            if current is None or current[0] != k:
                if current is not None:
                    yield finish(*current)
                job = dataset.jobs[k]
                feats = {e: np.zeros((job.n_tiles, extractors[e].feature_dim), np.float32) for e in job.encoders}
                current = (k, _Slide(feats, np.zeros(job.n_tiles, bool)))
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
