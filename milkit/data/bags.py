"""The bag store: per-slide feature files loaded once (optionally cached), padded into batches."""

from pathlib import Path

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


class BagStore:
    """Loads each slide's bag on first use; keeps it in memory when ``cache`` is on.

    Bad bags (empty, NaN/Inf features, unreadable) raise :class:`DataError` naming the
    slide and the file.
    """

    def __init__(self, paths: dict[str, Path], *, cache: bool = True) -> None:
        self.paths = paths
        self.cache = cache
        self._bags: dict[str, tuple[Tensor, Tensor]] = {}

    def __contains__(self, slide_id: str) -> bool:
        return slide_id in self.paths

    def load(self, slide_id: str) -> tuple[Tensor, Tensor]:
        """(features [N, D] float32, coords [N, 2] float32; zeros when the file has none)."""
        if slide_id in self._bags:
            return self._bags[slide_id]
        from milkit.data.feature_formats import read_bag

        path = self.paths[slide_id]
        try:
            bag = read_bag(path)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"slide {slide_id}: cannot read features from {path}: {exc}") from exc
        feats = torch.from_numpy(np.ascontiguousarray(bag.features, dtype=np.float32))
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise DataError(f"slide {slide_id}: {path} holds no patches (features shape {tuple(feats.shape)})")
        if not torch.isfinite(feats).all():
            bad = int((~torch.isfinite(feats)).any(1).sum())
            raise DataError(f"slide {slide_id}: {path} has NaN/Inf features in {bad} of {feats.shape[0]} patches; "
                            "re-extract this slide or drop it from the cohort")
        coords = (torch.from_numpy(np.asarray(bag.coords, dtype=np.float32)) if bag.coords is not None
                  else torch.zeros(feats.shape[0], 2))
        if self.cache:
            self._bags[slide_id] = (feats, coords)
        return feats, coords

    @property
    def feature_dim(self) -> int:
        first = next(iter(self.paths))
        return int(self.load(first)[0].shape[1])


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
