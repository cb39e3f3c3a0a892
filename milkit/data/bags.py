"""The bag store: per-slide feature files read lazily, cached within a byte budget, prefetched.

A cohort far larger than RAM trains at the speed of the disk: bags are read on demand,
kept in an LRU cache bounded by ``cache_mb`` (or all of them, or none), and the next batch is
read by background threads while the current one trains. With ``fp16_dir`` each float32 file
is converted once to a float16 copy (half the disk and I/O) that later epochs and runs read.
"""

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from milkit.errors import DataError
from milkit.model import Bags

FEATURE_SUFFIXES = (".h5", ".hdf5", ".pt")


def find_feature_file(features_dir: Path, slide_id: str) -> Path | None:
    """``<features_dir>/<slide_id>.h5`` (or .hdf5, .pt), or None."""
    for suffix in FEATURE_SUFFIXES:
        path = features_dir / f"{slide_id}{suffix}"
        if path.is_file():
            return path
    return None


class BagSource(Protocol):
    """What training reads bags from: a :class:`BagStore` (one bag per slide) or
    :class:`milkit.data.cases.CaseBags` (one per patient)."""

    paths: dict[str, Path]

    def __contains__(self, bag_id: str) -> bool: ...

    def load(self, bag_id: str) -> tuple[Tensor, Tensor]: ...

    def prefetch(self, bag_ids: Iterable[str]) -> None: ...

    @property
    def feature_dim(self) -> int: ...

    @property
    def read_rate_mb_s(self) -> float: ...


class BagStore:
    """Loads each slide's bag on demand.

    Args:
        paths: slide_id -> feature file.
        cache: keep loaded bags in memory.
        cache_mb: bound the cache to this many MiB (least recently used bags are dropped);
            None = unbounded.
        fp16_dir: convert float32 files once to float16 copies here and read those.
        prefetch_workers: background threads for :meth:`prefetch` (0 = off).

    Bad bags (empty, NaN/Inf features, unreadable) raise :class:`DataError` naming the
    slide and the file.
    """

    def __init__(self, paths: dict[str, Path], *, cache: bool = True, cache_mb: float | None = None,
                 fp16_dir: Path | None = None, prefetch_workers: int = 2) -> None:
        self.paths = paths
        self.cache = cache
        self.cache_bytes = None if cache_mb is None else int(cache_mb * 2**20)
        self.fp16_dir = fp16_dir
        self._bags: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._pending: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(prefetch_workers) if prefetch_workers else None
        self.bytes_read = 0
        self.read_seconds = 0.0

    def __contains__(self, slide_id: str) -> bool:
        return slide_id in self.paths

    def load(self, slide_id: str) -> tuple[Tensor, Tensor]:
        """(features [N, D] float32, coords [N, 2] float32; zeros when the file has none)."""
        with self._lock:
            hit = self._bags.get(slide_id)
            if hit is not None:
                self._bags.move_to_end(slide_id)
            future = self._pending.pop(slide_id, None)
        if hit is None:
            hit = future.result() if future is not None else self._read(slide_id)
            self._remember(slide_id, hit)
        feats, coords = hit
        return feats.float(), coords

    def forget(self, slide_id: str) -> None:
        """Drop a bag from the cache (e.g. one left out of the run)."""
        with self._lock:
            bag = self._bags.pop(slide_id, None)
            if bag is not None:
                self._held -= bag[0].numel() * bag[0].element_size() + bag[1].numel() * 4

    def prefetch(self, slide_ids: list[str]) -> None:
        """Start reading these bags in the background (no-op for cached or pending ones)."""
        if self._pool is None:
            return
        with self._lock:
            for sid in slide_ids:
                if sid not in self._bags and sid not in self._pending:
                    self._pending[sid] = self._pool.submit(self._read, sid)

    def _remember(self, slide_id: str, bag: tuple[Tensor, Tensor]) -> None:
        if not self.cache:
            return
        size = bag[0].numel() * bag[0].element_size() + bag[1].numel() * 4
        with self._lock:
            if slide_id in self._bags:
                return
            self._bags[slide_id] = bag
            self._held += size
            while self.cache_bytes is not None and self._held > self.cache_bytes and len(self._bags) > 1:
                _, (f, c) = self._bags.popitem(last=False)
                self._held -= f.numel() * f.element_size() + c.numel() * 4

    def _read(self, slide_id: str) -> tuple[Tensor, Tensor]:
        from milkit.data.feature_formats import read_bag, write_bag

        path = self.paths[slide_id]
        start = time.perf_counter()
        if self.fp16_dir is not None:
            half = self.fp16_dir / f"{slide_id}.h5"
            if not half.is_file():
                bag = read_bag(path)
                write_bag(half, bag.features.astype(np.float16), bag.coords,
                          {k: v for k, v in bag.attrs.items() if isinstance(v, (str, int, float))})
            path = half
        try:
            bag = _read_half(path) if self.fp16_dir is not None else read_bag(path)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"slide {slide_id}: cannot read features from {path}: {exc}") from exc
        feats = torch.from_numpy(np.ascontiguousarray(bag.features))
        if feats.dtype not in (torch.float16, torch.float32):
            feats = feats.float()
        with self._lock:
            self.bytes_read += feats.numel() * feats.element_size()
            self.read_seconds += time.perf_counter() - start
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise DataError(f"slide {slide_id}: {path} holds no patches (features shape {tuple(feats.shape)})")
        if not torch.isfinite(feats).all():
            bad = int((~torch.isfinite(feats)).any(1).sum())
            raise DataError(f"slide {slide_id}: {path} has NaN/Inf features in {bad} of {feats.shape[0]} patches; "
                            "re-extract this slide or drop it from the cohort")
        coords = (torch.from_numpy(np.asarray(bag.coords, dtype=np.float32)) if bag.coords is not None
                  else torch.zeros(feats.shape[0], 2))
        return feats, coords

    @property
    def feature_dim(self) -> int:
        first = next(iter(self.paths))
        return int(self.load(first)[0].shape[1])

    @property
    def read_rate_mb_s(self) -> float:
        """Sustained read rate of the feature files so far, MiB/s (decoded bytes / time reading)."""
        return self.bytes_read / 2**20 / self.read_seconds if self.read_seconds else float("nan")


def _read_half(path: Path):
    """Read an fp16 copy written by the store, keeping float16 in memory (half the cache)."""
    import h5py

    from milkit.data.feature_formats import Bag

    with h5py.File(path, "r") as f:
        return Bag(f["features"][()], f["coords"][()] if "coords" in f else None, {})


def collate_bags(items: list[tuple[Tensor, Tensor]]) -> Bags:
    """Pad B bags of N_i patches to [B, max N_i, D]; mask marks the real patches."""
    n = max(f.shape[0] for f, _ in items)
    d = items[0][0].shape[1]
    feats = torch.zeros(len(items), n, d)
    coords = torch.zeros(len(items), n, 2)
    mask = torch.zeros(len(items), n, dtype=torch.bool)
    for i, (f, c) in enumerate(items):
        feats[i, : f.shape[0]] = f
        coords[i, : c.shape[0]] = c
        mask[i, : f.shape[0]] = True
    return Bags(feats, mask, coords)
