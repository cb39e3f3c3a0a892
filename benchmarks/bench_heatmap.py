"""Heatmap time and peak memory on a 100k-patch slide (target: <= 30 s and <= 2 GB per heatmap).

The slide is a real pyramidal TIFF (tifffile, 256 px deflate tiles, levels 1/4/16/64x) of about
100k x 80k px whose elliptical "tissue" holds ~100k patches of 256 px: the size of a large
40x resection. Tiles are pre-encoded once and repeated, so writing it takes seconds and ~100 MB;
OpenSlide reads it as ``generic-tiff``, the same code path as a real slide (the heatmap only
reads the 64x level and 2 x top-k level-0 patches, like it would on a scanner file).

Each measurement runs in a fresh subprocess that reports its own wall time and peak RSS
(``VmHWM`` from /proc/self/status; ``getrusage(RUSAGE_SELF).ru_maxrss`` elsewhere, which on
Linux would report the forking parent's RSS instead), so numbers include Python, torch and
matplotlib start-up and nothing leaks between cases.

    .venv/bin/python benchmarks/bench_heatmap.py [--patches 100000] [--dim 1024] [--keep DIR]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PS = 256
CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
import numpy as np
case, args = sys.argv[1], json.loads(sys.argv[2])
if case == "render":
    from milkit.viz.heatmap import render_heatmap
    data = np.load(args["npz"])
    t = time.perf_counter()
    r = render_heatmap(args["slide"], data["coords"], data["scores"], 256, args["out"], width=args["width"],
                       top_k=args["top_k"])
else:
    from milkit.viz.attention import heatmap_for_run
    t = time.perf_counter()
    r = heatmap_for_run(args["run"], "big", args["out"], slide_path=args["slide"], width=args["width"],
                        top_k=args["top_k"])
inner = time.perf_counter() - t
try:  # VmHWM: this process's own peak (ru_maxrss would inherit the parent's RSS at fork on Linux)
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
except OSError:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"inner_s": inner, "total_s": time.perf_counter() - start, "peak_rss_mb": rss,
                  "shape": list(r.overlay.shape), "n": r.n_patches}))
"""


def tissue_grid(n_target: int) -> tuple[np.ndarray, int, int]:
    """Level-0 top-left coords of the 256 px patches inside an ellipse holding ~n_target patches."""
    # ellipse area = pi/4 * gw * gh patches with gw = 1.25 gh
    gh = int(np.ceil(np.sqrt(n_target / (np.pi / 4 * 1.25))))
    gw = int(gh * 1.25)
    gx, gy = np.meshgrid(np.arange(gw), np.arange(gh))
    inside = ((gx + 0.5 - gw / 2) / (gw / 2)) ** 2 + ((gy + 0.5 - gh / 2) / (gh / 2)) ** 2 <= 1
    coords = np.stack([gx[inside], gy[inside]], 1).astype(np.int64) * PS
    return coords, gw * PS + 2 * PS, gh * PS + 2 * PS


def write_pyramid(path: Path, width: int, height: int, coords: np.ndarray) -> None:
    """Deflate-tiled pyramidal TIFF; a tile is 'tissue' when its 64x-level pixel is tissue."""
    import cv2
    import imagecodecs
    import tifffile

    rng = np.random.default_rng(0)
    variants = []
    for _ in range(4):  # pink stroma with a few dark nuclei: compresses to a few kB per tile
        tile = np.empty((PS, PS, 3), np.uint8)
        tile[:] = (225, 150, 190)
        for x, y in rng.integers(10, PS - 10, (12, 2)):
            cv2.circle(tile, (int(x), int(y)), 6, (90, 40, 130), -1)
        variants.append(imagecodecs.zlib_encode(tile.tobytes()))
    white = imagecodecs.zlib_encode(np.full((PS, PS, 3), 255, np.uint8).tobytes())
    mask0 = np.zeros((height // PS + 1, width // PS + 1), bool)                # one cell per level-0 tile
    mask0[coords[:, 1] // PS, coords[:, 0] // PS] = True
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, ds in enumerate((1, 4, 16, 64)):
            w, h = width // ds, height // ds
            ny, nx = -(-h // PS), -(-w // PS)

            def tiles(ds=ds, ny=ny, nx=nx):
                for ty in range(ny):
                    for tx in range(nx):
                        cy, cx = min((ty * PS + PS // 2) * ds // PS, mask0.shape[0] - 1), \
                            min((tx * PS + PS // 2) * ds // PS, mask0.shape[1] - 1)
                        yield variants[(tx + ty) % 4] if mask0[cy, cx] else white

            tif.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(PS, PS), compression="zlib",
                      photometric="rgb", subfiletype=0 if i == 0 else 1, metadata=None)


def make_run(root: Path, dim: int, coords: np.ndarray) -> Path:
    """A 1-epoch ABMIL run on 12 small synthetic bags of width ``dim``, plus big.h5 (the 100k bag)."""
    import h5py

    from milkit.data.feature_formats import write_bag
    from milkit.plugins import get_plugin_manager
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.registry import build_registries
    from milkit.runner import run_recipe

    rng = np.random.default_rng(0)
    fdir = root / "features"
    rows = ["slide_id,case_id,label"]
    for i in range(12):
        write_bag(fdir / f"s{i}.h5", rng.normal(size=(20, dim)).astype(np.float32), np.zeros((20, 2)), {})
        rows.append(f"s{i},c{i},{'ab'[i % 2]}")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    feats = rng.normal(size=(len(coords), dim)).astype(np.float32)
    with h5py.File(fdir / "big.h5", "w") as f:
        f["features"] = feats
        f["coords"] = coords
        f.attrs["patch_size_level0"] = PS
    recipe = root / "r.toml"
    recipe.write_text(f'[run]\nname="bench"\n[cohort]\ncsv="{root / "cohort.csv"}"\nval_fraction=0.25\n'
                      'test_fraction=0.25\n[aggregator]\nname="abmil"\n[head]\nname="classification"\n'
                      '[train]\nepochs=1\nbatch_size=4\n')
    reg = build_registries(get_plugin_manager())
    return run_recipe(validate_recipe(load_recipe(recipe), reg), reg, out=root / "run", progress=False)


def measure(case: str, args: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, case, json.dumps(args)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=1024, help="feature width of the end-to-end case (UNI: 1024)")
    p.add_argument("--keep", type=Path, default=None, help="folder for the slide and run (default: a temp dir)")
    a = p.parse_args()
    root = a.keep or Path(tempfile.mkdtemp(prefix="milkit-bench-heatmap-"))
    root.mkdir(parents=True, exist_ok=True)
    coords, width, height = tissue_grid(a.patches)
    slide = root / "big.tiff"
    t = time.perf_counter()
    if not slide.is_file():
        write_pyramid(slide, width, height, coords)
    print(f"slide {width} x {height} px, {len(coords):,} patches of {PS} px, {slide.stat().st_size / 2**20:.0f} MB "
          f"({time.perf_counter() - t:.1f} s to write)")
    xy = coords / np.array([width, height])
    scores = np.exp(-((xy - [0.3, 0.4]) ** 2).sum(1) / 0.02) + np.random.default_rng(1).random(len(coords)) * 0.05
    npz = root / "scores.npz"
    np.savez(npz, coords=coords, scores=scores)
    t = time.perf_counter()
    run = make_run(root, a.dim, coords)
    print(f"run dir with a {len(coords):,} x {a.dim} feature file: {time.perf_counter() - t:.1f} s")
    cases = [("render", "render_heatmap, width 1024, top-k 8", {"width": 1024, "top_k": 8}),
             ("render", "render_heatmap, width 2048, top-k 8", {"width": 2048, "top_k": 8}),
             ("run", f"heatmap_for_run (ABMIL, {a.dim}-d features), width 1024", {"width": 1024, "top_k": 8})]
    print(f"\n{'case':<48} {'heatmap px':>12} {'call s':>8} {'process s':>10} {'peak RSS MB':>12}")
    for kind, label, extra in cases:
        args = {"npz": str(npz), "slide": str(slide), "run": str(run), "out": str(root / f"{kind}.png"), **extra}
        r = measure(kind, args)
        size = f"{r['shape'][1]}x{r['shape'][0]}"
        print(f"{label:<48} {size:>12} {r['inner_s']:>8.2f} {r['total_s']:>10.2f} {r['peak_rss_mb']:>12.0f}")
    print("\ntarget: <= 30 s and <= 2048 MB per heatmap (CLAM#298: 45-60 min and 140 GB)")
    if a.keep is None:
        shutil.rmtree(root)  # ~0.5 GB of slide and features


if __name__ == "__main__":
    main()
