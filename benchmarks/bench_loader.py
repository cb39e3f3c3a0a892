"""Out-of-core training: a feature cohort several times larger than the memory the process may use.

Writes a synthetic cohort of float32 HDF5 bags, then trains ABMIL for one epoch in a child process
whose address space is capped with RLIMIT_AS (``--limit-gb``), reading bags lazily through the
bag store (bounded LRU cache + background prefetch). Prints one row per storage mode: cohort size on
disk, the memory cap, the child's peak RSS, the sustained feature read rate and slides/s.

    python benchmarks/bench_loader.py [--slides 60] [--patches 12000] [--dim 1024] [--limit-gb 2.5]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(2)
from milkit.components.aggregators.abmil import ABMIL, ABMILConfig
from milkit.data.bags import BagStore, collate_bags
root, cache_mb, fp16 = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1"
paths = {p.stem: p for p in sorted((root / "bags").glob("*.h5"))}
store = BagStore(paths, cache_mb=cache_mb, fp16_dir=root / "fp16" if fp16 else None, prefetch_workers=2)
model = ABMIL(ABMILConfig(embed_dim=256, attn_dim=128), in_dim=store.feature_dim)
opt = torch.optim.Adam(model.parameters(), 1e-4)
ids = list(paths)
start = time.perf_counter()
for i, sid in enumerate(ids):
    store.prefetch(ids[i + 1:i + 3])
    bags = collate_bags([store.load(sid)])
    loss = model(bags.feats, bags.mask, bags.coords).embedding.pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "slides_per_s": len(ids) / seconds, "read_mb_s": store.read_rate_mb_s,
                  "bytes_read_mb": store.bytes_read / 2**20,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_cohort(root: Path, slides: int, patches: int, dim: int) -> float:
    (root / "bags").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    total = 0
    for i in range(slides):
        n = int(patches * rng.uniform(0.7, 1.3))
        with h5py.File(root / "bags" / f"s{i:04d}.h5", "w") as f:
            f["features"] = rng.standard_normal((n, dim), dtype=np.float32)
            f["coords"] = np.zeros((n, 2), dtype=np.int64)
        total += (root / "bags" / f"s{i:04d}.h5").stat().st_size
    return total / 2**30


def run_child(root: Path, cache_mb: float, fp16: bool, limit_gb: float) -> dict:
    def cap() -> None:
        limit = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(cache_mb), "1" if fp16 else "0"],
                         capture_output=True, text=True, preexec_fn=cap, env={**os.environ, "OMP_NUM_THREADS": "2", "MALLOC_ARENA_MAX": "2"})
    if out.returncode != 0:
        raise SystemExit(f"child failed under a {limit_gb} GiB cap:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slides", type=int, default=60)
    ap.add_argument("--patches", type=int, default=12000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--limit-gb", type=float, default=2.5, help="RLIMIT_AS of the training process")
    ap.add_argument("--cache-mb", type=float, default=256)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="milkit-bench-loader-"))
    t0 = time.perf_counter()
    size_gb = make_cohort(root, args.slides, args.patches, args.dim)
    print(f"cohort: {args.slides} slides x ~{args.patches} patches x {args.dim} float32 = {size_gb:.2f} GiB on disk "
          f"(written in {time.perf_counter() - t0:.0f} s) at {root}")
    print("| storage | cohort GiB | memory cap (RLIMIT_AS) GiB | cache MiB | peak RSS MiB | read MiB/s | slides/s |")
    print("|---|---|---|---|---|---|---|")
    for label, fp16 in (("float32", False), ("float16 (first pass converts)", True), ("float16 (converted)", True)):
        r = run_child(root, args.cache_mb, fp16, args.limit_gb)
        print(f"| {label} | {size_gb:.2f} | {args.limit_gb:.1f} | {args.cache_mb:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['read_mb_s']:.0f} | {r['slides_per_s']:.2f} |")


if __name__ == "__main__":
    main()
