"""The viewer's data, independent of the web framework: cohort table, slide pages, tiles, overlays.

Every answer is computed on first request and cached in byte-bounded LRUs (tiles, overlay images,
per-patch scores), so memory stays bounded however long one pans. Scores of one slide are computed
once even when the overlay and the top-k list ask at the same moment (one lock per layer).
"""

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milkit.errors import DataError
from milkit.view.cache import ByteLRU
from milkit.view.overlays import (
    PatchScores,
    check_cmap,
    colour_stops,
    overlay_rgba,
    patch_thumbnail,
    png_bytes,
    tissue_polygons,
    top_patches,
)
from milkit.view.paths import confined
from milkit.view.runs import ViewRun
from milkit.view.slides import SlideCatalogue

log = logging.getLogger("milkit")
MiB = 1 << 20
NORMALISE = ("percentile", "minmax")


@dataclass(frozen=True)
class CacheSizes:
    """Byte budgets of the viewer's caches."""

    tiles: int = 96 * MiB
    overlays: int = 48 * MiB
    scores: int = 64 * MiB
    thumbnails: int = 8 * MiB


class Viewer:
    """Runs (or a feature folder) and their slides, answering what the pages ask.

    Layers are what can be drawn over a slide: one per run (its attention), or, without runs,
    one that shows where the feature file's patches are.

    Args:
        runs: the runs shown; several are compared side by side.
        catalogue: their slides and files.
        caches: byte budgets.
    """

    def __init__(self, runs: list[ViewRun], catalogue: SlideCatalogue, caches: CacheSizes = CacheSizes()) -> None:
        self.runs = runs
        self.catalogue = catalogue
        self.tiles: ByteLRU[bytes] = ByteLRU(caches.tiles)
        self.overlays: ByteLRU[bytes] = ByteLRU(caches.overlays)
        self.scores_cache: ByteLRU[PatchScores] = ByteLRU(caches.scores)
        self.thumbs: ByteLRU[bytes] = ByteLRU(caches.thumbnails)
        self._layer_locks = [threading.Lock() for _ in range(max(1, len(runs)))]

    @classmethod
    def open(cls, run_dirs: Sequence[Path | str], *, slide_dirs: Sequence[Path | str] = (),
             features_dirs: Sequence[Path | str] = (), registries: Any = None,
             caches: CacheSizes = CacheSizes()) -> "Viewer":
        """A viewer over ``run_dirs`` (labelled A, B, ...) or, with none, over ``features_dirs``."""
        if not run_dirs and not features_dirs:
            raise DataError("nothing to show: give one or more run dirs, or --features DIR (and --slides DIR)")
        for d in [*slide_dirs, *features_dirs]:
            if not Path(d).is_dir():
                raise DataError(f"{d} is not a folder")
        if registries is None:
            from milkit.plugins import get_plugin_manager
            from milkit.registry import build_registries

            registries = build_registries(get_plugin_manager())
        labels = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        if len(run_dirs) > len(labels):
            raise DataError(f"at most {len(labels)} runs can be compared at once, got {len(run_dirs)}")
        runs = [ViewRun(d, labels[i], registries) for i, d in enumerate(run_dirs)]
        catalogue = SlideCatalogue(runs, [Path(d) for d in slide_dirs], [Path(d) for d in features_dirs])
        return cls(runs, catalogue, caches)

    # ---- pages -------------------------------------------------------------------------------

    def layers(self) -> list[dict[str, Any]]:
        if self.runs:
            return [{"index": i, **r.summary()} for i, r in enumerate(self.runs)]
        return [{"index": 0, "label": "patches", "name": "patches of the feature files", "folds": [],
                 "report": False, "cases": False}]

    def cohort(self) -> dict[str, Any]:
        """The cohort page's table: one row per slide, one column group per run."""
        several = len(self.runs) > 1
        rows = []
        for sid in self.catalogue.ids:
            row: dict[str, Any] = {"slide_id": sid, "slide_file": self.catalogue.slide_file(sid) is not None}
            cases = {r.slide_case[sid] for r in self.runs if sid in r.slide_case}
            if cases:
                row["case_id"] = ", ".join(sorted(cases))
            for run in self.runs:
                for key, value in run.fields(sid).items():
                    row[f"{run.label} {key}" if several else key] = value
            rows.append(row)
        columns = list(dict.fromkeys(k for row in rows for k in row if k != "slide_file"))
        numeric = {c for c in columns if any(_is_num(r.get(c)) for r in rows)
                   and all(_is_num(r.get(c)) or r.get(c) in (None, "") for r in rows)}
        return {"layers": self.layers(), "runs": bool(self.runs),
                "columns": [{"key": c, "numeric": c in numeric} for c in columns], "rows": rows}

    def slide_info(self, slide_id: str) -> dict[str, Any]:
        """What the slide page needs before any tile: size, file, and per run its row and report."""
        dz = self.catalogue.deepzoom(slide_id)
        reader = dz.pool.first
        file = self.catalogue.slide_file(slide_id)
        info: dict[str, Any] = {
            "slide_id": slide_id, "width": dz.width, "height": dz.height, "mpp": reader.mpp,
            "backend": reader.backend, "file": file.name if file else None,
            "note": None if file else "no slide file found (give --slides DIR): shown on a white canvas sized "
                                      "from the patch coordinates",
            "layers": [],
        }
        for layer in self.layers():
            if self.runs:
                run = self.runs[layer["index"]]
                layer = {**layer, "fields": run.fields(slide_id), "fold": run.fold(slide_id),
                         "case_id": run.slide_case.get(slide_id), "report": run.report(slide_id)}
            else:
                layer = {**layer, "fields": {}, "fold": 0, "report": None}
            info["layers"].append(layer)
        return info

    # ---- tiles -------------------------------------------------------------------------------

    def dzi(self, slide_id: str) -> str:
        return self.catalogue.deepzoom(slide_id).dzi()

    def tile(self, slide_id: str, level: int, col: int, row: int) -> bytes:
        def make() -> bytes:
            dz = self.catalogue.deepzoom(slide_id)
            return dz.encode(dz.tile(level, col, row))

        return self.tiles.get_or_compute((slide_id, level, col, row), make)

    # ---- overlays ----------------------------------------------------------------------------

    def _layer(self, index: int) -> ViewRun | None:
        n = max(1, len(self.runs))
        if not 0 <= index < n:
            raise DataError(f"no layer {index}: this viewer has {n} (0..{n - 1})")
        return self.runs[index] if self.runs else None

    def fold_for(self, index: int, slide_id: str, fold: int | None) -> int:
        run = self._layer(index)
        return 0 if run is None else (run.fold(slide_id) if fold is None else fold)

    def scores(self, index: int, slide_id: str, fold: int | None = None) -> PatchScores:
        """Per-patch scores of layer ``index`` on the slide: the run's attention (fold: the one that
        predicted the slide's shown row), or uniform scores on the patches (no run)."""
        self.catalogue.check(slide_id)
        run = self._layer(index)
        fold = self.fold_for(index, slide_id, fold)
        key = (index, slide_id, fold)
        with self._layer_locks[index]:
            cached = self.scores_cache.get(key)
            if cached is not None:
                return cached
            if run is None:
                import numpy as np

                coords, ps = self.catalogue.layout(slide_id)
                layer = PatchScores(coords, np.ones(len(coords)), ps, "patches (no run: uniform score)")
            else:
                from milkit.viz.heatmap import infer_patch_size

                s = run.scorer(fold).scores(slide_id)
                ps = s.patch_size_level0 or infer_patch_size(s.coords)
                layer = PatchScores(s.coords.astype("float64"), s.scores.astype("float64"), float(ps),
                                    f"{s.aggregator} attention, fold {fold}")
            return self.scores_cache.put(key, layer)

    def overlay(self, index: int, slide_id: str, *, fold: int | None = None, cmap: str = "jet",
                normalise: str = "percentile") -> bytes:
        """The heatmap of layer ``index`` as an RGBA PNG spanning the whole slide."""
        check_cmap(cmap)
        if normalise not in NORMALISE:
            raise DataError(f"unknown normalise '{normalise}'; use {' or '.join(NORMALISE)}")
        fold = self.fold_for(index, slide_id, fold)

        def make() -> bytes:
            dz = self.catalogue.deepzoom(slide_id)
            return png_bytes(overlay_rgba(self.scores(index, slide_id, fold), dz.width, dz.height, cmap=cmap,
                                          normalise=normalise))  # type: ignore[arg-type]

        return self.overlays.get_or_compute((index, slide_id, fold, cmap, normalise), make)

    def top(self, index: int, slide_id: str, *, fold: int | None = None, k: int = 8) -> dict[str, Any]:
        layer = self.scores(index, slide_id, fold)
        return {"what": layer.what, "n_patches": len(layer.scores), "patch_size": layer.patch_size,
                "fold": self.fold_for(index, slide_id, fold), "top": top_patches(layer, min(max(k, 0), 64))}

    def top_thumbnail(self, index: int, slide_id: str, rank: int, *, fold: int | None = None) -> bytes:
        """JPEG of the ``rank``-th highest-scoring patch (read from the slide)."""
        fold = self.fold_for(index, slide_id, fold)
        if not 0 <= rank < 64:
            raise DataError(f"top-k rank {rank} out of range (0..63)")

        def make() -> bytes:
            patches = top_patches(self.scores(index, slide_id, fold), rank + 1)
            if rank >= len(patches):
                raise DataError(f"slide '{slide_id}' has only {len(patches)} patches")
            p = patches[rank]
            dz = self.catalogue.deepzoom(slide_id)
            with dz.pool.reader() as reader:
                img = patch_thumbnail(reader, p["x"], p["y"], p["size"])
            return dz.encode(img, quality=85)

        return self.thumbs.get_or_compute((index, slide_id, fold, rank), make)

    def tissue(self, slide_id: str) -> dict[str, Any]:
        polygons, source = tissue_polygons(self.catalogue.features_dirs, self.catalogue.check(slide_id))
        return {"polygons": polygons, "source": Path(source).name if source else None}

    @staticmethod
    def colours(cmap: str) -> list[str]:
        return colour_stops(cmap)

    # ---- files -------------------------------------------------------------------------------

    def run_file(self, index: int, relative: str) -> Path:
        """A file inside run ``index``'s folder (report.html, plots/...), confined to it."""
        run = self._layer(index)
        if run is None:
            raise DataError("this viewer serves no run, so it has no run files")
        path = confined(run.run_dir, relative)
        if not path.is_file():
            raise DataError(f"no file '{relative}' in run {run.label}")
        return path

    def ping(self, token: str | None) -> dict[str, Any]:
        """Whether this viewer serves the run with that :func:`milkit.view.runs.run_token` (for report.html)."""
        from milkit import __version__

        match = next((i for i, r in enumerate(self.runs) if token and r.token == token), None)
        return {"app": "milkit view", "version": __version__, "run": match}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
