"""``milkit view`` on a 100k-patch slide: time to first tile, tile latency while zooming and panning, peak RSS.

The slide and run are the ones ``bench_heatmap.py`` builds (a ~100k x 80k px pyramidal TIFF, 256 px
deflate tiles, levels 1/4/16/64x, ~100k tissue patches; a 1-epoch ABMIL run whose ``big`` bag has
100k x ``--dim`` features): written tile by tile, so no level-0 image is ever held in memory (the
``synthetic_wsi`` of ``bench_reading.py`` builds the whole image in RAM, ~30 GB at this size).

The server is the real command, ``milkit view RUN --slides DIR``, in its own process (pinned to
``--cores`` CPUs); the client plays OpenSeadragon: six connections, the page, the slide's JSON and
DZI, then the tiles of the home view (the level that fits a 1400 x 900 viewport), then a zoom into the
tissue and a pan across it at full resolution, requesting at each step the tiles that came into view
at the drawn level and the level above (OpenSeadragon blends both). The heatmap is fetched after the
first tile, in parallel with the rest, as the page does.

    .venv/bin/python benchmarks/bench_viewer.py [--patches 100000] [--dim 1024] [--keep DIR] [--cores 2]
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_heatmap import PS, make_run, tissue_grid, write_pyramid  # noqa: E402

VIEW_W, VIEW_H, TILE, CONNECTIONS = 1400, 900, 254, 6


def get(url: str) -> tuple[float, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        n = len(r.read())
    return time.perf_counter() - t, n


def rss_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def dz_levels(w: int, h: int) -> list[tuple[int, int]]:
    dims = [(w, h)]
    while dims[-1] != (1, 1):
        a, b = dims[-1]
        dims.append((max(1, math.ceil(a / 2)), max(1, math.ceil(b / 2))))
    return dims[::-1]


def visible(level_dims: tuple[int, int], box: tuple[float, float, float, float]) -> set[tuple[int, int]]:
    """Tiles of one level under the level-px box (x0, y0, x1, y1)."""
    w, h = level_dims
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
    return {(c, r) for c in range(int(x0 // TILE), int(max(x0, x1 - 1) // TILE) + 1)
            for r in range(int(y0 // TILE), int(max(y0, y1 - 1) // TILE) + 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--keep", type=Path, default=None, help="folder for the slide and run (reused when present)")
    p.add_argument("--cores", type=int, default=2, help="CPUs the server process may use")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--pan-steps", type=int, default=40)
    p.add_argument("--heatmap", choices=("during", "after"), default="during",
                   help="fetch the heatmap while zooming and panning (as the page does) or after")
    p.add_argument("--threads", type=int, default=None, help="MILKIT_THREADS for the server (default: unset)")
    a = p.parse_args()
    root = a.keep or Path(tempfile.mkdtemp(prefix="milkit-bench-viewer-"))
    root.mkdir(parents=True, exist_ok=True)
    coords, width, height = tissue_grid(a.patches)
    slides = root / "slides"
    slides.mkdir(exist_ok=True)
    slide = slides / "big.tiff"
    if not slide.is_file():
        t = time.perf_counter()
        write_pyramid(slide, width, height, coords)
        print(f"slide written in {time.perf_counter() - t:.1f} s")
    run = root / "run"
    if not (run / "fold_0" / "target_state.json").is_file():
        make_run(root, a.dim, coords)
    print(f"slide {width:,} x {height:,} px, {len(coords):,} patches of {PS} px; run {run}")

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MILKIT_THREADS")}   # as a user runs it
    if a.threads:
        env["MILKIT_THREADS"] = str(a.threads)
    cmd = [sys.executable, "-m", "milkit", "view", str(run), "--slides", str(slides), "--port", str(a.port)]
    t_spawn = time.perf_counter()
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              preexec_fn=lambda: os.sched_setaffinity(0, set(range(a.cores))))
    base = f"http://127.0.0.1:{a.port}"
    try:
        while True:
            try:
                get(base + "/api/ping")
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"server died: {server.stderr.read().decode()}") from None
                time.sleep(0.05)
        startup = time.perf_counter() - t_spawn
        rss_idle = rss_mb(server.pid, "VmRSS")
        api = base + "/api/slides/big"
        pool = ThreadPoolExecutor(CONNECTIONS)

        # ---- open the slide page: page, JSON, DZI, then the home view's tiles ----
        dims = dz_levels(width, height)
        top = len(dims) - 1
        home = next(i for i in range(top, -1, -1) if dims[i][0] <= VIEW_W and dims[i][1] <= VIEW_H)
        t0 = time.perf_counter()
        opening = {"page": get(base + "/slide/big")[0], "slide JSON": get(api)[0], "DZI": get(api + "/slide.dzi")[0]}
        first = [None]

        def fetch(level: int, col: int, row: int) -> float:
            dt, _ = get(f"{api}/slide_files/{level}/{col}_{row}.jpeg")
            if first[0] is None:
                first[0] = time.perf_counter() - t0
            return dt

        home_tiles = [(lv, c, r) for lv in (home, home - 1) for c, r in sorted(visible(dims[lv], (0, 0, *dims[lv])))]
        lat_home = list(pool.map(lambda t3: fetch(*t3), home_tiles))
        home_done = time.perf_counter() - t0
        t_ov = time.perf_counter()
        side = ThreadPoolExecutor(1)               # the page's own request, beside the six tile connections
        overlay = side.submit(get, base + "/api/runs/0/slides/big/overlay.png") if a.heatmap == "during" else None

        # ---- zoom into the tissue centre, level by level, then pan right at full resolution ----
        cx, cy = width * 0.45, height * 0.5
        latencies, steps, seen = [], [], set(home_tiles)
        path = [(lv, cx, cy) for lv in range(home + 1, top + 1)]
        step_px = VIEW_W / 3                                   # a third of the screen per step
        path += [(top, cx + i * step_px, cy + 0.3 * i * step_px) for i in range(1, a.pan_steps + 1)]
        for level, x, y in path:
            ds = 2 ** (top - level)
            want = []
            for lv in (level, level - 1):                      # drawn level and the one blended under it
                f = 2 ** (level - lv)
                box = ((x / ds - VIEW_W / 2) / f, (y / ds - VIEW_H / 2) / f, (x / ds + VIEW_W / 2) / f,
                       (y / ds + VIEW_H / 2) / f)
                want += [(lv, c, r) for c, r in sorted(visible(dims[lv], box)) if (lv, c, r) not in seen]
            seen.update(want)
            t = time.perf_counter()
            lat = list(pool.map(lambda t3: fetch(*t3), want))
            steps.append((time.perf_counter() - t, len(want)))
            latencies += lat
        if overlay is None:
            t_ov = time.perf_counter()
            overlay = side.submit(get, base + "/api/runs/0/slides/big/overlay.png")
        ov_s, ov_bytes = overlay.result()
        ov_total = time.perf_counter() - t_ov
        ov_cached, _ = get(base + "/api/runs/0/slides/big/overlay.png")
        peak = rss_mb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(10)

    lat = np.array(latencies) * 1000
    step_s = np.array([s for s, _ in steps]) * 1000
    print(json.dumps({"startup_s": round(startup, 2), "rss_idle_mb": round(rss_idle), "peak_rss_mb": round(peak)}))
    print(f"\nserver start (process spawn -> /api/ping answers): {startup:.2f} s, RSS {rss_idle:.0f} MB")
    print(f"slide page -> first tile: {first[0] * 1000:.0f} ms ("
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in opening.items())
          + f"); home view ({len(lat_home)} tiles, levels {home - 1}-{home}) complete: {home_done * 1000:.0f} ms")
    print(f"heatmap ({ov_bytes / 1024:.0f} kB PNG, scores of {len(coords):,} patches x {a.dim}-d computed, "
          f"{a.heatmap} the pan): {ov_total:.2f} s, cached {ov_cached * 1000:.0f} ms")
    print(f"zoom + pan: {len(lat)} tiles over {len(steps)} steps; tile latency p50 {np.percentile(lat, 50):.0f} ms, "
          f"p95 {np.percentile(lat, 95):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, max {lat.max():.0f} ms")
    print(f"per step (all new tiles of one view in): p50 {np.percentile(step_s, 50):.0f} ms, p95 "
          f"{np.percentile(step_s, 95):.0f} ms, max {step_s.max():.0f} ms; steps over 250 ms: "
          f"{int((step_s > 250).sum())} of {len(step_s)}")
    print(f"server peak RSS: {peak:.0f} MB (cores: {a.cores}; load average {os.getloadavg()[0]:.1f})")
    if a.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
