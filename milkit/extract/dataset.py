"""Tile blocks as a torch Dataset, so DataLoader worker processes read and resize while the encoder runs."""

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from milkit.extract.tiling import TilePlan, read_block
from milkit.slides import SlideReader, open_slide


class TileBlocks(Dataset):
    """Item ``i`` = block ``i``: ``{"idx": [n] int64 tile indices, "tiles": [n, px, px, 3] uint8,
    "error": str}``. Each process opens its own reader; read errors come back as ``error`` text
    (not an exception) so the pipeline can report them cleanly."""

    def __init__(self, path: Path, *, reader: str, mpp_override: float | None, plan: TilePlan,
                 blocks: list[np.ndarray], out_px: int) -> None:
        self.path, self.reader_name, self.mpp_override = path, reader, mpp_override
        self.plan, self.blocks, self.out_px = plan, blocks, out_px
        self._reader: SlideReader | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.blocks)

    def _open(self) -> SlideReader:
        if self._reader is None or self._pid != os.getpid():
            self._reader = open_slide(self.path, reader=self.reader_name, mpp_override=self.mpp_override)
            self._pid = os.getpid()
        return self._reader

    def __getitem__(self, i: int) -> dict:
        idx = self.blocks[i]
        try:
            tiles = read_block(self._open(), self.plan, idx, self.out_px)
            error = ""
        except Exception as exc:  # reported by the pipeline, with the slide's name
            tiles = np.zeros((0, self.out_px, self.out_px, 3), np.uint8)
            error = f"{type(exc).__name__}: {exc}"
        return {"idx": torch.from_numpy(idx), "tiles": torch.from_numpy(tiles), "error": error}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
