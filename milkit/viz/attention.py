"""Per-patch attention of a trained run, and ``heatmap_for_run`` (what ``milkit heatmap`` calls)."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from milkit.errors import DataError, MilkitError
from milkit.registry import Registries
from milkit.viz.heatmap import HeatmapResult, render_heatmap

log = logging.getLogger("milkit")


class NoAttentionError(MilkitError):
    """The run's aggregator returns no per-patch scores, so there is nothing to draw."""


@dataclass
class SlideScores:
    """One slide's per-patch attention from a trained model (coords in level-0 px)."""

    slide_id: str
    coords: np.ndarray
    scores: np.ndarray
    patch_size_level0: float | None
    slide_path: Path | None
    aggregator: str


def attention_aggregators(registries: Registries) -> list[str]:
    """Names of registered aggregators that return attention (``Aggregator.returns_attention``; undeclared
    ones are probed at their default configuration on a tiny bag)."""
    names = []
    feats, mask = torch.randn(1, 6, 16), torch.ones(1, 6, dtype=torch.bool)           # b n d, b n
    coords = torch.stack(torch.meshgrid(torch.arange(2.0), torch.arange(3.0), indexing="ij"), -1).view(1, 6, 2) * 256
    for name in registries.aggregators.names():
        cls = registries.aggregators.get(name)
        if cls.returns_attention is not None:                 # declared: no need to build it
            if cls.returns_attention:
                names.append(name)
            continue
        try:
            with torch.no_grad():
                out = cls(cls.Config(), in_dim=16).eval()(feats, mask, coords)
            if out.attention is not None:
                names.append(name)
        except Exception as exc:  # a plugin that cannot run on a toy bag is simply not listed
            log.debug("aggregator %s could not be probed for attention: %s", name, exc, exc_info=True)
    return names


def _registries() -> Registries:
    from milkit.plugins import get_plugin_manager
    from milkit.registry import build_registries

    return build_registries(get_plugin_manager())


class RunScorer:
    """A trained run's model (one fold) loaded once, scoring slides on demand.

    Args:
        run_dir: a ``milkit run`` output folder.
        fold: which fold's checkpoint to use.
        registries: component registries (built from the installed plugins if None).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:i]``.
    """

    def __init__(self, run_dir: Path | str, *, fold: int = 0, registries: Registries | None = None,
                 device: str = "auto") -> None:
        from milkit.runner import features_dir, load_cohort, load_run

        self.run_dir = Path(run_dir)
        if not (self.run_dir / "recipe.toml").is_file():
            raise DataError(f"{self.run_dir} is not a milkit run dir (no recipe.toml); pass the folder `milkit run` wrote")
        if not (self.run_dir / f"fold_{fold}" / "target_state.json").is_file():
            folds = sorted(p.name for p in self.run_dir.glob("fold_*"))
            raise DataError(f"{self.run_dir}: fold {fold} has no trained model; available: {', '.join(folds) or 'none'}")
        self.registries = registries or _registries()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.recipe = load_run(self.run_dir, self.registries, fold=fold, device=device)
        self.device = torch.device(device)
        self.slide_paths: dict[str, str] = {}
        try:
            cohort = load_cohort(self.recipe)
            self.features_dir = features_dir(self.recipe, cohort)
            self.slide_paths = {r["slide_id"]: r["slide_path"] for r in cohort.rows if r.get("slide_path")}
        except Exception as exc:  # cohort moved: features_dir must then be explicit in the recipe
            if self.recipe.cohort.features_dir is None:
                raise DataError(f"cannot find the feature files of {self.run_dir}: its cohort cannot be read ({exc})") from exc
            self.features_dir = self.recipe.cohort.features_dir

    @property
    def aggregator(self) -> str:
        return self.recipe.aggregator.name

    @torch.no_grad()
    def scores(self, slide_id: str) -> SlideScores:
        """Attention of every patch of ``slide_id`` (model in eval mode, the whole bag at once)."""
        from milkit.data.bags import find_feature_file
        from milkit.data.feature_formats import read_bag

        path = find_feature_file(Path(self.features_dir), slide_id)
        if path is None:
            raise DataError(f"no feature file for slide '{slide_id}' in {self.features_dir} (looked for "
                            f"{slide_id}.h5/.hdf5/.pt)")
        bag = read_bag(path)
        if bag.coords is None:
            raise DataError(f"{path} has no patch coordinates, so its attention cannot be placed on the slide")
        self.model.check_width(int(bag.features.shape[1]), path)
        feats = torch.from_numpy(np.ascontiguousarray(bag.features, dtype=np.float32))[None].to(self.device)  # 1 n d
        coords = torch.from_numpy(bag.coords.astype(np.float32))[None].to(self.device)                       # 1 n 2
        mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=self.device)                             # 1 n
        out = self.model.aggregator(feats, mask, coords)
        if out.attention is None:
            have = attention_aggregators(self.registries)
            raise NoAttentionError(
                f"aggregator '{self.aggregator}' of {self.run_dir} returns no per-patch attention, so there is no "
                f"heatmap to draw; aggregators that expose scores: {', '.join(have) or 'none installed'}")
        ps = bag.attrs.get("patch_size_level0")
        corners = bag.coords
        if bag.attrs.get("coords_anchor") == "center":    # slideflow bag without mpp: centres on a grid
            from milkit.viz.heatmap import infer_patch_size

            ps = ps or infer_patch_size(bag.coords)
            corners = bag.coords - float(ps) / 2
        slide = self.slide_paths.get(slide_id)
        return SlideScores(slide_id, corners, out.attention[0].float().cpu().numpy(),
                           float(ps) if ps else None, Path(slide) if slide else None, self.aggregator)


def heatmap_for_run(run_dir: Path | str, slide_id: str, out_png: Path | str | None = None, *, fold: int = 0,
                    width: int | None = 1024, level: int | None = None, top_k: int = 8,
                    slide_path: Path | str | None = None, scorer: RunScorer | None = None,
                    registries: Registries | None = None, geojson: Path | str | bool = False,
                    **render: Any) -> HeatmapResult:
    """Attention heatmap of ``slide_id`` from a trained run; default file ``RUN/heatmaps/<slide>.png``.
    ``geojson`` (a path, or True for ``<png stem>.geojson`` beside it) also writes the attention as
    QuPath tiles (:func:`write_attention_geojson`)."""
    scorer = scorer or RunScorer(run_dir, fold=fold, registries=registries)
    s = scorer.scores(slide_id)
    out = Path(out_png) if out_png is not None else Path(run_dir) / "heatmaps" / f"{slide_id}.png"
    title = f"{slide_id}: {s.aggregator} attention, fold {fold}, {len(s.scores):,} patches"
    result = render_heatmap(slide_path if slide_path is not None else s.slide_path, s.coords, s.scores,
                            s.patch_size_level0, out, width=width, level=level, top_k=top_k, title=title, **render)
    if geojson is not False:
        target = out.with_suffix(".geojson") if geojson is True else Path(geojson)
        result.geojson = write_attention_geojson(target, s, Path(scorer.features_dir), result.notes)
    return result


def write_attention_geojson(path: Path, s: SlideScores, features_dir: Path, notes: list[str]) -> Path:
    """``s`` as QuPath tiles with measurements ``attention`` (raw) and ``attention percentile`` (0-1 rank,
    as the heatmap colours it), plus the tissue contours of its extraction as annotations."""
    from milkit.viz.geojson import tissue_annotations, write_scores_geojson
    from milkit.viz.heatmap import infer_patch_size, normalise_scores

    tissue, source = tissue_annotations(features_dir, s.slide_id)
    if source is None:
        notes.append(f"no tissue contours in {features_dir}/segmentation/ (written by milkit extract); "
                     "the GeoJSON holds the tiles only")
    ps = s.patch_size_level0 or infer_patch_size(s.coords)
    return write_scores_geojson(path, s.coords, ps, {"attention": s.scores,
                                                     "attention percentile": normalise_scores(s.scores)},
                                annotations=tissue)
