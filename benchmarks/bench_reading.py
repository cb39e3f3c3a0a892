"""Tile reading throughput: milkit's reader pipeline vs a CLAM-style loop, and end-to-end with an encoder.

Reading mode (default) times, on the same tiles of the same slides:

* **CLAM-style**: one process, one OpenSlide ``read_region`` per tile at level 0, PIL bicubic resize
  to the encoder size (as ``extract_features_fp.py`` does);
* **milkit, reader=openslide**: block reads (``block_tiles`` x ``block_tiles`` tiles per region) from
  the best pyramid level through OpenSlide, OpenCV resize, one process;
* **milkit, auto reader**: the same with the reader ``milkit extract`` picks (``tiff-tiles`` for SVS
  and tiled TIFF: tiles decoded straight from the file), in one process, and through DataLoader
  worker processes started once for all passes (the pipeline reads small slides in groups of
  about 8,192 tiles through one DataLoader).

Small slides are read in repeated passes until ``--min-tiles`` tiles are timed; every pass opens the
slide afresh (in both loops), so per-slide costs count once per pass and no decoded-tile cache
carries over. The speed-up compares one process with one process.

Slides: synthetic pyramidal JPEG TIFFs of H&E-like texture, generated once into --work: 40x
(0.25 um/px) with levels 1/2/4/8/16, 40x Aperio-like with 1/4/16 (20x must come from level 0), and
20x (0.5 um/px, read at native resolution); plus the real slides in ../shared/data/wsi that have
tissue at the target resolution.

    python benchmarks/bench_reading.py [--target-mpp 0.5] [--tile 224] [--size 12288] [--workers N]
    python benchmarks/bench_reading.py --encoder color-texture [--set input_px=224] [--device cuda]
"""

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_WSI = REPO.parent / "shared" / "data" / "wsi"


def synthetic_wsi(path: Path, size: int, level_step: int = 2, mpp: float = 0.25) -> Path:
    """A size x size ``mpp`` um/px tiled JPEG pyramid (downsamples level_step**i down to 1/16) of
    H&E-like texture."""
    import cv2
    import tifffile

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    small = rng.normal(0, 1, (size // 64, size // 64)).astype(np.float32)
    field = cv2.GaussianBlur(small, (0, 0), 3)
    blob = cv2.resize(field / field.std(), (size, size), interpolation=cv2.INTER_LINEAR) > -0.2   # ~60% tissue
    img = np.full((size, size, 3), 240, np.uint8)
    tex = rng.integers(-20, 20, (size, size, 1), dtype=np.int16)
    pink = np.clip(np.array([225, 150, 190], np.int16) + tex, 0, 255).astype(np.uint8)
    img[blob] = pink[blob]
    del pink, tex
    opts = {"tile": (256, 256), "photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": 85}}
    tmp = path.with_suffix(".part")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        level, ds = img, 1
        while ds <= 16:
            extra = {"subfiletype": 1} if ds > 1 else {}
            tif.write(level, resolution=(1e4 / (mpp * ds),) * 2, resolutionunit="CENTIMETER", **opts, **extra)
            level = cv2.resize(level, (level.shape[1] // level_step, level.shape[0] // level_step),
                               interpolation=cv2.INTER_AREA)
            ds *= level_step
    tmp.rename(path)
    return path


def plan_for(path: Path, settings):
    from milkit.extract.segmentation import segment_tissue
    from milkit.extract.tiling import plan_tiles, resolve_resolution
    from milkit.slides import open_slide

    with open_slide(path, mpp_override=settings.mpp_override) as r:
        res = resolve_resolution(r, settings)
        seg = segment_tissue(r, settings.segmentation_params(), ref_patch_px=res.patch_size_level0)
        return plan_tiles(r, seg, settings, res), r.backend


def clam_style(path: Path, plan, out_px: int, passes: int) -> float:
    """tiles/s of one read_region per tile at level 0 + PIL bicubic resize, single process."""
    import openslide
    from PIL import Image

    ps = plan.resolution.patch_size_level0
    t0 = time.perf_counter()
    for _ in range(passes):
        slide = openslide.OpenSlide(str(path))
        for x, y in plan.coords:
            tile = slide.read_region((int(x), int(y)), 0, (ps, ps)).convert("RGB")
            np.asarray(tile.resize((out_px, out_px), Image.BICUBIC))
        slide.close()
    return passes * len(plan) / (time.perf_counter() - t0)


def milkit_reading(path: Path, plan, backend: str, out_px: int, workers: int, block: int, passes: int) -> float:
    """tiles/s of milkit's block reads, each pass a slide job of one DataLoader with ``workers``
    processes (as ``milkit extract`` groups small slides)."""
    from torch.utils.data import DataLoader

    from milkit.extract.dataset import SlideJob, TileBlocks
    from milkit.extract.tiling import make_blocks

    blocks = make_blocks(plan, block)
    jobs = [SlideJob(f"pass{i}", path, backend, plan, blocks, (out_px,)) for i in range(passes)]
    t0 = time.perf_counter()
    ds = TileBlocks(jobs)
    loader = DataLoader(ds, batch_size=None, num_workers=min(workers, len(ds)), prefetch_factor=4 if workers else None)
    n = 0
    for item in loader:
        assert not item["error"], item["error"]
        n += len(item["idx"])
    ds.close()
    return n / (time.perf_counter() - t0)


def subset(plan, limit: int):
    from milkit.extract.tiling import TilePlan

    return TilePlan(plan.coords[:limit], plan.tissue[:limit], plan.resolution, plan.level, plan.level_downsample,
                    plan.read_size)


def reading(args: argparse.Namespace) -> None:
    import os

    from rich.console import Console
    from rich.table import Table

    from milkit.extract.settings import ExtractionSettings

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    slides = [(synthetic_wsi(work / f"synthetic-40x-{args.size}.tiff", args.size), None, "synthetic 40x, levels x2"),
              (synthetic_wsi(work / f"synthetic-40x-aperio-{args.size}.tiff", args.size, 4), None,
               "synthetic 40x, levels x4"),
              (synthetic_wsi(work / f"synthetic-20x-{args.size // 2}.tiff", args.size // 2, 4, mpp=0.5), None,
               "synthetic 20x (native)")]
    for name, mpp, label in (("cmu-1-small-region.svs", None, "CMU-1 region (20x, JPEG)"),
                             ("tcga-cr-7395-01a-01-ts1.svs", 0.25, "TCGA (JPEG 2000, mpp_override)")):
        if (SHARED_WSI / name).is_file():
            slides.append((SHARED_WSI / name, mpp, label))
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    table = Table(title=f"tile reading, target {args.target_mpp} um/px, {args.tile} px tiles -> {args.tile} px "
                        f"(>= {args.min_tiles} tiles timed per slide)")
    for col in ("slide", "tiles x passes", "level read", "CLAM-style", "milkit, openslide", "milkit, auto reader",
                f"auto, {workers} workers", "speed-up (1 process)"):
        table.add_column(col, justify="right")
    for path, mpp, label in slides:
        settings = ExtractionSettings(target_mpp=args.target_mpp, tile_size_px=args.tile, mpp_override=mpp)
        full, backend = plan_for(path, settings)
        plan = subset(full, args.max_tiles)
        passes = max(1, math.ceil(args.min_tiles / len(plan)))
        base = clam_style(path, plan, args.tile, passes)
        via_openslide = milkit_reading(path, plan, "openslide", args.tile, 0, args.block, passes)
        inproc = milkit_reading(path, plan, backend, args.tile, 0, args.block, passes)
        multi = milkit_reading(path, plan, backend, args.tile, workers, args.block, passes) if workers else inproc
        table.add_row(label, f"{len(plan)} x {passes}", f"{plan.level} (x{plan.level_downsample:.4g})",
                      f"{base:.0f}", f"{via_openslide:.0f}", f"{inproc:.0f} ({backend})", f"{multi:.0f}",
                      f"{inproc / base:.1f}x")
    Console().print(table)
    print("tiles/s; CLAM-style = one OpenSlide read_region per tile at level 0 + PIL resize")


def end_to_end(args: argparse.Namespace) -> None:
    from milkit.extract.build import build_extraction
    from milkit.extract.pipeline import extract_slides
    from milkit.plugins import get_plugin_manager
    from milkit.recipe import parse_override
    from milkit.registry import build_registries

    table = {"name": args.encoder, "target_mpp": args.target_mpp, "tile_size_px": args.tile}
    for item in args.set or []:
        parts, value = parse_override(f"extractor.{item}")
        table[parts[-1]] = value
    encoder, settings = build_extraction(table, build_registries(get_plugin_manager()))
    slides = [Path(s) for s in args.slides] or [synthetic_wsi(Path(args.work) / f"synthetic-40x-{args.size}.tiff",
                                                              args.size)]
    out = Path(tempfile.mkdtemp(prefix="milkit-bench-"))
    try:
        t0 = time.perf_counter()
        summary = extract_slides(slides, out, extractor=encoder, settings=settings, device=args.device)
        secs = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    tiles = sum(o.n_tiles for o in summary.outcomes if o.status == "done")
    print(f"{args.encoder}: {tiles} tiles from {len(summary.done)} slide(s) in {secs:.1f} s = "
          f"{tiles / secs:.1f} tiles/s end to end (device {args.device}); failed: {summary.failed or 'none'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target-mpp", type=float, default=0.5)
    p.add_argument("--tile", type=int, default=224)
    p.add_argument("--size", type=int, default=12288, help="side of the synthetic 40x slide, level-0 px")
    p.add_argument("--block", type=int, default=4, help="block_tiles")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default: milkit's auto)")
    p.add_argument("--max-tiles", type=int, default=1500, help="tiles of a slide used at most")
    p.add_argument("--min-tiles", type=int, default=1000, help="repeat passes over small slides up to this")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "milkit-bench-reading"))
    p.add_argument("--encoder", help="end-to-end mode with this registered extractor")
    p.add_argument("--set", action="append", help="extractor KEY=VALUE (end-to-end mode)")
    p.add_argument("--device", default="auto")
    p.add_argument("slides", nargs="*", help="slides for end-to-end mode (default: the synthetic one)")
    args = p.parse_args()
    (end_to_end if args.encoder else reading)(args)


if __name__ == "__main__":
    sys.exit(main())
