"""Slides -> one feature HDF5 per slide: segment, tile, read in worker processes, encode, write atomically.

Slides are planned (segmentation, tile grid) one by one and read in groups of about
``LOADER_TILES`` tiles through one DataLoader, whose reader processes start once per group.

Resumable (slides with an output file are skipped), failure-tolerant (a bad slide is recorded in
``extraction_report.csv`` and the rest continue), shardable (``shard=(i, n)`` takes every n-th slide)
and deterministic (re-running produces byte-identical files). :func:`extract_slides_multi` feeds the
tiles, read once, to several encoders and writes one folder of feature files per encoder.
"""

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from milkit.data.feature_formats import write_bag
from milkit.errors import DataError
from milkit.extract.annotations import (AnnotationFile, AnnotationRule, RegionMask, check_bounds, downsample_hint,
                                        file_sha256, find_annotation_file, outline_rings, read_geojson, region_mask)
from milkit.extract.dataset import SlideJob, TileBlocks
from milkit.extract.encode import SlideResult, encode_slides
from milkit.extract.qc import SEGMENTATION_DIR, save_geojson, save_overlay
from milkit.extract.report import ExtractionSummary, SlideOutcome, report_name, write_report
from milkit.extract.segmentation import segment_tissue
from milkit.extract.settings import ExtractionSettings
from milkit.extract.stain import StainNormalizer
from milkit.extract.tiling import TilePlan, make_blocks, plan_tiles, resolve_resolution
from milkit.extractor import Extractor
from milkit.slides import open_slide, slide_id_from_path

IDENTITY_KEYS = ("extractor", "weights_sha256", "extractor_config", "target", "tile_size_px", "stride_px")
"""Attributes a resumed feature file must share with the run (plus, with annotations,
``annotations_rule`` and the slide's ``annotations_sha256``)."""
STAIN_IDENTITY = {"stain": "none", "stain_reference": ""}
"""Stain attributes a resumed file must share with the run, and their value in files that lack them
(made before stain normalisation existed, i.e. without it)."""
log = logging.getLogger("milkit")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda:<LOCAL_RANK>`` when CUDA is available (torchrun sets LOCAL_RANK), else CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def shard_slides(slides: dict[str, Path], shard: tuple[int, int] | None) -> list[tuple[str, Path]]:
    """(slide id, path) sorted by id; shard (i, n) keeps positions i, i + n, ... (a partition over i)."""
    ordered = sorted(slides.items())
    if shard is None:
        return ordered
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise DataError(f"invalid shard {i}/{n}: expected 0 <= i < n")
    return ordered[i::n]


def output_attrs(extractor: Extractor, settings: ExtractionSettings, stain: StainNormalizer | None = None) -> dict:
    """Attributes that identify how features were made; a file with different ones is not resumed.
    ``stain``: the run's normaliser (default: built from ``settings``)."""
    if stain is None:
        stain = StainNormalizer.build(settings.stain, settings.stain_target)
    return {
        "extractor": extractor.name,
        "extractor_config": json.dumps(extractor.config.model_dump(mode="json", exclude={"weights"}), sort_keys=True),
        "weights_sha256": extractor.weights_sha256 or "",
        "feature_dim": int(extractor.feature_dim),
        "encoder_input_px": int(extractor.tile_size_px),
        "target": (f"mpp={settings.target_mpp:g}" if settings.target_mpp is not None
                   else f"magnification={settings.target_magnification:g}"),
        "tile_size_px": settings.tile_size_px,
        "stride_px": settings.stride,
        "target_mpp": settings.target_mpp,
        "target_magnification": settings.target_magnification,
        "min_tissue_fraction": settings.min_tissue_fraction,
        **({"annotations_rule": rule.identity()} if (rule := settings.annotation_rule()) is not None else {}),
        **(stain.attrs() if stain is not None else {"stain": "none"}),
    }


def _existing_mismatch(path: Path, expected: dict) -> str:
    """'' when ``path`` was made with ``expected`` settings, else what differs."""
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as exc:
        return f"cannot read existing {path.name} ({exc}); delete it to re-extract"
    for key in (*IDENTITY_KEYS, *STAIN_IDENTITY,
                *(k for k in ("annotations_rule", "annotations_sha256") if k in expected)):
        have = attrs.get(key, STAIN_IDENTITY.get(key))
        have = have.decode() if isinstance(have, bytes) else have
        now = expected.get(key, STAIN_IDENTITY.get(key))
        if have != now:
            return (f"{path.name} exists but was made with {key}={have!r} (now {now!r}); "
                    "use another --out folder or delete the file to re-extract")
    return ""


def _n_tiles(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f["features"].shape[0])


def _plan(path: Path, sid: str, settings: ExtractionSettings, seg_dir: Path,
          mpp_override: float | None, annotations: Path | None = None) -> tuple[TilePlan, str, dict]:
    with open_slide(path, reader=settings.reader, mpp_override=mpp_override) as reader:
        res = resolve_resolution(reader, settings)
        seg = segment_tissue(reader, settings.segmentation_params(), ref_patch_px=res.patch_size_level0)
        rule = settings.annotation_rule()
        ann, region, note = None, None, ""
        if rule is not None and annotations is not None:
            ann = read_geojson(annotations)
            check_bounds(ann, reader.dimensions, sid)
            region = region_mask(ann, rule, reader.dimensions, patch_size_level0=res.patch_size_level0, seg=seg)
            note = downsample_hint(ann, seg, reader.dimensions, reader.level_downsamples)
        plan = plan_tiles(reader, seg, settings, res, region=region)
        save_geojson(seg, seg_dir / f"{sid}.geojson")
        selected, carved = outline_rings(ann, rule) if ann is not None and rule is not None else ([], [])
        save_overlay(seg, seg_dir / f"{sid}.png", coords=plan.coords, patch_size_level0=res.patch_size_level0,
                     selected=selected, carved=carved)
        w0, h0 = reader.dimensions
        if len(plan) == 0:
            ps = res.patch_size_level0
            why = (f"slide is {w0}x{h0} px, smaller than one tile ({ps} px at level 0)" if ps > min(w0, h0)
                   else f"no tissue found (segmented tissue {100 * seg.tissue_fraction:.1f}% of the slide)"
                   if seg.tissue_fraction == 0 else
                   _region_why(ann, rule, region, settings) if ann is not None and rule and region is not None
                   else f"no tile reaches min_tissue_fraction={settings.min_tissue_fraction} "
                   f"(tissue {100 * seg.tissue_fraction:.1f}% of the slide)")
            hint = f"; {note}" if note else ""
            raise DataError(f"no tiles: {why}; check the overlay {seg_dir / (sid + '.png')}{hint}")
        meta = {"reader": reader.backend, "mpp": res.mpp, "mpp_source": reader.mpp_note,
                "magnification": res.magnification, "patch_size_level0": res.patch_size_level0,
                "level": plan.level, "level0_width": w0, "level0_height": h0, "slide_id": sid,
                "tissue_fraction": round(seg.tissue_fraction, 6)}
        if res.target_mpp is not None:
            meta["target_mpp"] = res.target_mpp
        if res.target_magnification is not None:
            meta["target_magnification"] = res.target_magnification
        if rule is not None:
            meta["annotations_file"] = ann.path.name if ann is not None else ""
            meta["annotations_sha256"] = ann.sha256 if ann is not None else ""
            if region is not None:
                meta["annotated_fraction"] = round(region.fraction, 6)
        if note:
            log.warning("slide %s: %s", sid, note)
            meta["annotations_warning"] = note
        return plan, reader.backend, meta


def _region_why(ann: AnnotationFile, rule: AnnotationRule, region: RegionMask, settings: ExtractionSettings) -> str:
    """Why no tile lies in the annotated region of a slide that has tissue."""
    chosen, _ = rule.select(ann)
    if rule.mode == "inside" and not chosen:
        wanted = f"of class {', '.join(rule.include)}" if rule.include else "that is not excluded"
        return (f"{ann.path.name} has no annotation {wanted} (it has: {ann.class_counts()}); the classes are "
                "QuPath's properties.classification.name, matched exactly")
    return (f"no tile is at least {rule.min_fraction:g} inside the allowed region ({rule.describe()} in "
            f"{ann.path.name}: {100 * region.fraction:.1f}% of the slide) with min_tissue_fraction="
            f"{settings.min_tissue_fraction} of tissue there; lower annotations_min_fraction or check the regions")


LOADER_TILES = 8192
"""Slides are planned and then read in groups of about this many tiles (at least one slide) through
one DataLoader, so reader processes start once per group rather than once per slide."""


@dataclass
class _Target:
    """One encoder of a run and where its feature files go."""

    extractor: Extractor
    out_dir: Path
    expected: dict
    summary: ExtractionSummary


_Prepared = tuple[dict[int, SlideOutcome], SlideJob | None, dict, float]
"""A slide's finished outcomes per target (skipped, or failed before reading), and, when some target
still needs it, its job (naming those targets), metadata and start time."""


def extract_slides(slides: Sequence[Path], out_dir: Path, *, extractor: Extractor, settings: ExtractionSettings,
                   shard: tuple[int, int] | None = None, device: str = "auto",
                   progress: bool = True, slide_ids: Sequence[str] | None = None,
                   slide_mpp: Mapping[str, float] | None = None) -> ExtractionSummary:
    """Extract features for ``slides`` (this shard's share) into ``out_dir/<slide_id>.h5``.

    ``slide_ids`` names the outputs (default: each file's stem, see ``slide_id_from_path``).
    ``slide_mpp`` gives level-0 mpp per slide id, overriding the file and ``settings.mpp_override``.

    Returns:
        An :class:`ExtractionSummary`; the same rows are in ``out_dir/extraction_report.csv``
        (``extraction_report.shard-i-of-n.csv`` when sharded), in slide-id order.
    """
    stain = StainNormalizer.build(settings.stain, settings.stain_target)
    target = _Target(extractor, Path(out_dir), output_attrs(extractor, settings, stain),
                     ExtractionSummary(report_path=Path(out_dir) / report_name(shard)))
    _extract(slides, [target], Path(out_dir) / SEGMENTATION_DIR, settings, shard=shard, device=device,
             progress=progress, slide_ids=slide_ids, slide_mpp=slide_mpp, stain=stain)
    return target.summary


def extract_slides_multi(slides: Sequence[Path], out_dir: Path, *, extractors: Sequence[Extractor],
                         settings: ExtractionSettings, shard: tuple[int, int] | None = None, device: str = "auto",
                         progress: bool = True, slide_ids: Sequence[str] | None = None,
                         slide_mpp: Mapping[str, float] | None = None) -> dict[str, ExtractionSummary]:
    """Like :func:`extract_slides` for several encoders in one pass over the tiles: each slide is
    segmented, tiled and read once, and its tiles (resized to each encoder's input side) feed every
    encoder. Encoder ``e`` writes ``out_dir/<e.name>/<slide_id>.h5`` and its own
    ``extraction_report.csv`` there (each folder is what ``extract_slides`` would write); the
    segmentation goes to ``out_dir/segmentation/``. A slide already extracted for some encoders is
    encoded only by the others. The features equal those of one run per encoder.

    Returns:
        ``{encoder name: ExtractionSummary}``.
    """
    names = [e.name for e in extractors]
    if len(set(names)) != len(names) or not names:
        raise DataError(f"give each encoder once (got {', '.join(names) or 'none'})")
    stain = StainNormalizer.build(settings.stain, settings.stain_target)
    targets = [_Target(e, Path(out_dir) / e.name, output_attrs(e, settings, stain),
                       ExtractionSummary(report_path=Path(out_dir) / e.name / report_name(shard)))
               for e in extractors]
    _extract(slides, targets, Path(out_dir) / SEGMENTATION_DIR, settings, shard=shard, device=device,
             progress=progress, slide_ids=slide_ids, slide_mpp=slide_mpp, stain=stain)
    return {t.extractor.name: t.summary for t in targets}


def _extract(slides: Sequence[Path], targets: list[_Target], seg_dir: Path, settings: ExtractionSettings, *,
             shard: tuple[int, int] | None, device: str, progress: bool, slide_ids: Sequence[str] | None,
             slide_mpp: Mapping[str, float] | None, stain: StainNormalizer | None = None) -> None:
    if slide_ids is not None and len(slide_ids) != len(slides):
        raise ValueError(f"{len(slide_ids)} slide_ids for {len(slides)} slides")
    seen: dict[str, Path] = {}
    for k, s in enumerate(slides):
        sid = slide_ids[k] if slide_ids is not None else slide_id_from_path(s)
        if sid in seen and Path(seen[sid]).resolve() != Path(s).resolve():
            raise DataError(f"two slides share the id '{sid}': {seen[sid]} and {s}; rename one "
                            "(outputs are named <slide_id>.h5)")
        seen[sid] = Path(s)
    mine = shard_slides(seen, shard)
    if settings.annotations is not None and not Path(settings.annotations).expanduser().is_dir():
        raise DataError(f"annotations folder not found: {settings.annotations}; set [extractor] annotations to the "
                        "folder of QuPath GeoJSON exports (<slide_id>.geojson), relative to the recipe's folder")
    dev = resolve_device(device)
    for t in targets:
        t.extractor.to(dev).eval()
        if dev.type == "cuda" and t.extractor.channels_last:
            t.extractor.to(memory_format=torch.channels_last)
        if settings.compile:
            t.extractor.compile()                          # in place: forward runs the compiled graph
        t.out_dir.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        cohort = bar.add_task("slides", total=len(mine))
        group: list[_Prepared] = []

        def flush() -> None:
            for outcomes in _encode_group(group, targets, settings, dev, bar, stain):
                for t, outcome in zip(targets, outcomes):
                    t.summary.add(outcome)
                    write_report(t.summary.report_path, t.summary.outcomes)
                bar.advance(cohort)
            group.clear()

        for sid, path in mine:
            mpp = (slide_mpp or {}).get(sid, settings.mpp_override)
            group.append(_prepare(path, sid, targets, seg_dir, settings, mpp))
            if sum(job.n_tiles for _, job, _, _ in group if job is not None) >= LOADER_TILES:
                flush()
        flush()


def _prepare(path: Path, sid: str, targets: list[_Target], seg_dir: Path, settings: ExtractionSettings,
             mpp_override: float | None) -> _Prepared:
    t0 = time.perf_counter()
    done: dict[int, SlideOutcome] = {}
    annotations, slide_attrs = None, {}
    if settings.annotations is not None:
        try:
            annotations = find_annotation_file(settings.annotations, sid, path)
        except DataError as exc:
            return {e: _failed(sid, path, exc, t0) for e in range(len(targets))}, None, {}, t0
        slide_attrs = {"annotations_sha256": file_sha256(annotations) if annotations is not None else ""}
    for e, t in enumerate(targets):
        out = t.out_dir / f"{sid}.h5"
        if out.exists():
            why = _existing_mismatch(out, {**t.expected, **slide_attrs})
            done[e] = (SlideOutcome(sid, str(path), "failed", why) if why else
                       SlideOutcome(sid, str(path), "skipped", "already extracted", _n_tiles(out)))
    needed = tuple(e for e in range(len(targets)) if e not in done)
    if not needed:
        return done, None, {}, t0
    if settings.annotations is not None and annotations is None and settings.annotations_missing == "skip":
        why = (f"no annotation file for this slide in {settings.annotations} (looked for {sid}.geojson, "
               f"{Path(path).name}.geojson, .json); annotations_missing = \"tissue\" tiles its tissue instead")
        return {**done, **{e: SlideOutcome(sid, str(path), "skipped", why, 0, time.perf_counter() - t0)
                           for e in needed}}, None, {}, t0
    try:
        plan, backend, meta = _plan(path, sid, settings, seg_dir, mpp_override, annotations)
    except Exception as exc:  # one bad slide must not stop the cohort
        return {**done, **{e: _failed(sid, path, exc, t0) for e in needed}}, None, {}, t0
    sizes = tuple(sorted({targets[e].extractor.tile_size_px for e in needed}))
    job = SlideJob(sid, path, backend, plan, make_blocks(plan, settings.block_tiles), sizes, mpp_override, needed)
    return done, job, meta, t0


def _failed(sid: str, path: Path, why: Exception | str, t0: float) -> SlideOutcome:
    if isinstance(why, str) or isinstance(why, DataError):
        reason = str(why)                               # already says what to do
    else:
        reason = f"{type(why).__name__}: {why}"
    return SlideOutcome(sid, str(path), "failed", " ".join(reason.split()), 0, time.perf_counter() - t0)


def _encode_group(group: list[_Prepared], targets: list[_Target], settings: ExtractionSettings, dev: torch.device,
                  bar: Progress, stain: StainNormalizer | None = None) -> Iterator[list[SlideOutcome]]:
    """Read and encode the group's jobs through one DataLoader; yield every slide's outcomes (one per
    target) in order."""
    jobs = [(job, meta, t0) for _, job, meta, t0 in group if job is not None]
    results: dict[int, dict[int, SlideOutcome]] = {}
    if jobs:
        ds = TileBlocks([j for j, _, _ in jobs])
        tasks: dict[int, TaskID] = {}

        def on_tiles(k: int, n: int) -> None:
            if k not in tasks:
                tasks[k] = bar.add_task(f"  {jobs[k][0].slide_id}", total=jobs[k][0].n_tiles)
            bar.advance(tasks[k], n)

        for res in encode_slides(ds, [t.extractor for t in targets], batch_size=settings.batch_size,
                                 num_workers=settings.num_workers, device=dev, on_tiles=on_tiles, stain=stain):
            if res.k in tasks:
                bar.remove_task(tasks.pop(res.k))
            job, meta, t0 = jobs[res.k]
            results[res.k] = {e: _write(job, meta, t0, res, e, targets[e], settings) for e in job.encoders}
    k = 0
    for done, job, _, t0 in group:
        if job is not None:
            written = results.get(k) or {e: _failed(job.slide_id, job.path, "no tiles came back from the reader", t0)
                                         for e in job.encoders}
            done = {**done, **written}
            k += 1
        yield [done[e] for e in range(len(targets))]


def _write(job: SlideJob, meta: dict, t0: float, res: SlideResult, e: int, target: _Target,
           settings: ExtractionSettings) -> SlideOutcome:
    if res.features is None:
        return _failed(job.slide_id, job.path, res.error, t0)
    try:
        feats = res.features[e].astype("float16") if settings.save_fp16 else res.features[e]
        plain = {"stain_unnormalised_tiles": res.unnormalised[e]} if e in res.unnormalised else {}
        write_bag(target.out_dir / f"{job.slide_id}.h5", feats, job.plan.coords, {**target.expected, **meta, **plain})
    except Exception as exc:
        return _failed(job.slide_id, job.path, exc, t0)
    note = f"warning: {meta['annotations_warning']}" if meta.get("annotations_warning") else ""
    if res.unnormalised.get(e):
        note = "; ".join(filter(None, [note, f"{res.unnormalised[e]} of {job.n_tiles} tiles left unnormalised "
                                             "(too little stain for the stain method)"]))
    return SlideOutcome(job.slide_id, str(job.path), "done", note, job.n_tiles, time.perf_counter() - t0)
