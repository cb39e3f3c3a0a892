"""Which slides the viewer knows and where their files are; open slides kept in a small LRU.

A slide id maps to a slide file found in a ``--slides`` folder (by file name without extension,
as :func:`milkit.slides.base.slide_id_from_path` reads it) or, failing that, the run cohort's
``slide_path``. Browsers only ever name slide ids; file paths are never taken from a request.
A slide without a file is shown as a white canvas sized from its patch coordinates. Slides of a
``--slides`` folder that a run did not use are listed too: its model scores any slide with a feature
file in the run's feature folder, as ``milkit heatmap`` does.
"""

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from milkit.data.bags import FEATURE_SUFFIXES, find_feature_file
from milkit.errors import DataError
from milkit.slides.base import slide_id_from_path
from milkit.slides.open import SLIDE_SUFFIXES, open_slide
from milkit.view.blank import BlankSlide
from milkit.view.overlays import patch_layout
from milkit.view.runs import ViewRun
from milkit.view.tiles import DeepZoom, ReaderPool

log = logging.getLogger("milkit")
OPEN_SLIDES = 4
"""Slides kept open at once (each with up to two readers and its coarse-level pyramid)."""


def natural_key(slide_id: str) -> list[str | int]:
    """Sort key that puts ``s2`` before ``s10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", slide_id)]


def slides_in(folder: Path) -> dict[str, Path]:
    """slide id -> file for every slide file under ``folder`` (recursively; the first of a name wins)."""
    out: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name.lower().endswith(SLIDE_SUFFIXES):
            out.setdefault(slide_id_from_path(path), path)
    return out


class SlideCatalogue:
    """The slides of the runs (or of a feature folder), their files and feature files.

    Args:
        runs: the runs shown (their slides, cohort ``slide_path`` and feature folders).
        slide_dirs: ``--slides`` folders (their files take precedence over the cohort's paths).
        features_dirs: ``--features`` folders (slides are then also listed from their feature files).
    """

    def __init__(self, runs: list[ViewRun], slide_dirs: Sequence[Path] = (), features_dirs: Sequence[Path] = ()) -> None:
        self.runs = runs
        self.files: dict[str, Path] = {}
        self.features_dirs: list[Path] = [Path(d) for d in features_dirs]
        ids: list[str] = []
        for run in runs:
            paths, fdir = run.cohort_files
            self.files.update(paths)
            if fdir is not None and fdir not in self.features_dirs:
                self.features_dirs.append(Path(fdir))
            ids += run.slide_ids()
        for d in self.features_dirs:
            if not runs and d.is_dir():
                ids += sorted(p.stem for p in d.iterdir() if p.suffix.lower() in FEATURE_SUFFIXES)
        for d in slide_dirs:
            found = slides_in(Path(d))
            self.files.update(found)
            ids += list(found)          # with a run too: its model scores any slide with a feature file
        self.ids = sorted(dict.fromkeys(ids), key=natural_key)
        self._known = set(self.ids)
        self._open: OrderedDict[str, DeepZoom] = OrderedDict()
        self._layouts: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, slide_id: str) -> bool:
        return slide_id in self._known

    def check(self, slide_id: str) -> str:
        if slide_id not in self._known:
            raise DataError(f"unknown slide '{slide_id}': it is in none of the runs or folders this viewer serves")
        return slide_id

    def slide_file(self, slide_id: str) -> Path | None:
        path = self.files.get(self.check(slide_id))
        return path if path is not None and path.is_file() else None

    def feature_file(self, slide_id: str) -> Path | None:
        for d in self.features_dirs:
            path = find_feature_file(d, self.check(slide_id))
            if path is not None:
                return path
        return None

    def layout(self, slide_id: str) -> tuple[np.ndarray, float]:
        """Patch corners and side of the slide's feature file (cached for a few slides)."""
        with self._lock:
            if slide_id in self._layouts:
                self._layouts.move_to_end(slide_id)
                return self._layouts[slide_id]
        path = self.feature_file(slide_id)
        if path is None:
            dirs = ", ".join(map(str, self.features_dirs)) or "none known"
            raise DataError(f"no feature file for slide '{slide_id}' in the feature folders ({dirs})")
        layout = patch_layout(path)
        with self._lock:
            self._layouts[slide_id] = layout
            while len(self._layouts) > 16:
                self._layouts.popitem(last=False)
        return layout

    def deepzoom(self, slide_id: str) -> DeepZoom:
        """The slide's Deep Zoom pyramid, opened on first use (at most :data:`OPEN_SLIDES` stay open)."""
        self.check(slide_id)
        with self._lock:
            dz = self._open.get(slide_id)
            if dz is not None:
                self._open.move_to_end(slide_id)
                return dz
        path = self.slide_file(slide_id)
        if path is not None:
            dz = DeepZoom(ReaderPool(lambda: open_slide(path)))
        else:
            coords, ps = self.layout(slide_id)
            w, h = (int(np.ceil(coords.max(0)[i] + ps)) if len(coords) else int(ps) for i in (0, 1))
            dz = DeepZoom(ReaderPool(lambda: BlankSlide(slide_id, w, h), size=1))
        with self._lock:
            if slide_id in self._open:       # another thread opened it meanwhile
                dz.pool.close()
                return self._open[slide_id]
            self._open[slide_id] = dz
            while len(self._open) > OPEN_SLIDES:
                self._open.popitem(last=False)[1].pool.close()
        return dz

    def close(self) -> None:
        with self._lock:
            for dz in self._open.values():
                dz.pool.close()
            self._open.clear()
