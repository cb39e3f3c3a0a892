"""Tile blocks of several slides as one torch Dataset, so DataLoader worker processes (started once
for the lot) read and resize while the encoder runs."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from milkit.extract.tiling import TilePlan, read_block
from milkit.slides import SlideReader, open_slide


@dataclass
class SlideJob:
    """One planned slide: where to read (``reader`` backend), which tiles (grouped in blocks), the
    tile sides to resize them to, and which of the run's encoders still need it."""

    slide_id: str
    path: Path
    reader: str
    plan: TilePlan
    blocks: list[np.ndarray]
    sizes: tuple[int, ...]
    mpp_override: float | None = None
    encoders: tuple[int, ...] = (0,)

    @property
    def n_tiles(self) -> int:
        return len(self.plan)


class TileBlocks(Dataset):
    """Item ``i`` = one block of one slide, in slide order then block order:
    ``{"slide": int (index in jobs), "idx": list of n tile indices, "tiles": {px: [n, px, px, 3] uint8}
    for each of the job's sizes, "error": str}``. Each process keeps the reader of the slide it is on;
    read errors come back as ``error`` text (not an exception) so the pipeline can fail that slide alone."""

    def __init__(self, jobs: list[SlideJob]) -> None:
        self.jobs = jobs
        self.items = [(k, j) for k, job in enumerate(jobs) for j in range(len(job.blocks))]
        self._reader: SlideReader | None = None
        self._key: tuple[int, int] = (-1, -1)         # (pid, slide) the open reader belongs to

    def __len__(self) -> int:
        return len(self.items)

    def _open(self, k: int) -> SlideReader:
        key = (os.getpid(), k)
        if self._reader is None or self._key != key:
            if self._reader is not None and self._key[0] == key[0]:
                self._reader.close()
            job = self.jobs[k]
            self._reader = None
            self._reader = open_slide(job.path, reader=job.reader, mpp_override=job.mpp_override)
            self._key = key
        return self._reader

    def __getitem__(self, i: int) -> dict:
        k, j = self.items[i]
        job = self.jobs[k]
        idx = job.blocks[j]
        tiles = {px: torch.empty((len(idx), px, px, 3), dtype=torch.uint8) for px in job.sizes}
        if get_worker_info() is not None:       # written straight into the memory the main process maps
            for t in tiles.values():
                t.share_memory_()
        try:
            read_block(self._open(k), job.plan, idx, job.sizes, outs={px: t.numpy() for px, t in tiles.items()})
            error = ""
        except Exception as exc:  # reported by the pipeline, with the slide's name
            tiles, error = {px: t[:0] for px, t in tiles.items()}, f"{type(exc).__name__}: {exc}"
        # idx as a list: a tensor would cost the worker a fresh shared-memory segment per item
        return {"slide": k, "idx": idx.tolist(), "tiles": tiles, "error": error}

    def close(self) -> None:
        if self._reader is not None and self._key[0] == os.getpid():
            self._reader.close()
        self._reader = None
