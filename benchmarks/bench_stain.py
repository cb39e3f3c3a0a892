"""Stain normalisation throughput: the normaliser alone, and what it costs next to an encoder.

Tiles: 224 px tiles of ../shared/data/wsi/cmu-1-small-region.svs at level 0 with at least 30% stained
pixels, repeated to ``--tiles`` (random H&E-like noise when the slide is absent). Two tables:

* **normaliser alone**: tiles/s of milkit's batched normalisers (``milkit.extract.stain``) on batches
  of ``--batch`` tiles, and of torchstain's per-image ``TorchMacenkoNormalizer`` /
  ``TorchReinhardNormalizer`` looped over the same tiles (when torchstain is installed);
* **with an encoder**: tiles/s of one extraction step exactly as ``milkit extract`` runs it (tiles to
  the device, normalised, scaled, encoded under ``inference_mode``, bf16 autocast on CUDA), per
  encoder, for ``stain = none`` and each method; in brackets the share of the ``none`` speed kept.

On CPU the transformers run at reduced depth (``--depth``, default 2 blocks at full width and input
size, as ``bench_encoders.py``), so the encoder columns show the cost relative to a cheap ViT; a full-depth
ViT is roughly depth/2 times slower and the normaliser's share shrinks accordingly.

    python benchmarks/bench_stain.py [--threads N] [--batch 32] [--tiles 128] [--device auto]
        [--encoders color-texture,resnet50-trunc,kaiko-vit-s16,uni] [--depth 2]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SLIDE = HERE.parents[0].parent / "shared" / "data" / "wsi" / "cmu-1-small-region.svs"
METHODS = ("macenko", "reinhard", "vahadane")


def real_tiles(n: int) -> tuple[torch.Tensor, str]:
    """``n`` uint8 tiles [n, 224, 224, 3] and where they come from."""
    if SLIDE.is_file():
        from milkit.extract.stain import _planar, _stained
        from milkit.slides import open_slide

        with open_slide(SLIDE) as reader:
            img = reader.read_region(0, 0, 0, *reader.dimensions)
        tiles = torch.from_numpy(np.stack([img[y:y + 224, x:x + 224] for y in range(0, img.shape[0] - 224, 224)
                                           for x in range(0, img.shape[1] - 224, 224)]))
        tiles = tiles[_stained(_planar(tiles)).float().mean(1) >= 0.3]
        source = f"{len(tiles)} tissue tiles of {SLIDE.name}"
    else:
        g = torch.Generator().manual_seed(0)
        tiles = (torch.tensor([180, 110, 170]) + torch.randint(-40, 40, (32, 224, 224, 3), generator=g)).to(torch.uint8)
        source = "random H&E-like noise (slide not found)"
    return tiles[torch.arange(n) % len(tiles)].contiguous(), source


def rate(step, n: int, dev: torch.device, repeats: int = 3) -> float:
    """tiles/s of ``step()`` (which processes ``n`` tiles): best of ``repeats`` after one warm-up."""
    step()
    best = float("inf")
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tiles", type=int, default=128, help="tiles per timed pass (a multiple of --batch)")
    p.add_argument("--device", default="auto")
    p.add_argument("--encoders", default="color-texture,resnet50-trunc,kaiko-vit-s16,uni")
    p.add_argument("--depth", type=int, default=None, help="transformer blocks (default: 2 on CPU, full on CUDA)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table

    sys.path.insert(0, str(HERE))
    from bench_encoders import reduced

    from milkit.extract.pipeline import resolve_device
    from milkit.extract.stain import StainNormalizer
    from milkit.plugins import get_plugin_manager
    from milkit.registry import build_registries

    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    depth = args.depth if args.depth is not None else (None if cuda else 2)
    tiles, source = real_tiles(args.tiles)
    batches = tiles.split(args.batch)
    normalizers = {m: StainNormalizer.build(m) for m in METHODS}
    console = Console(width=150)
    console.print(f"{dev}, {torch.get_num_threads()} threads, 224 px, batch {args.batch}, {len(tiles)} tiles a pass "
                  f"({source}), best of 3 passes; transformer depth {depth or 'full'}")

    alone = Table(title="stain normalisation alone (tiles/s)")
    for col in ("method", "milkit (batched)", "torchstain (per tile)"):
        alone.add_column(col, justify="left" if col == "method" else "right")
    try:
        from torchstain.torch.normalizers import TorchMacenkoNormalizer, TorchReinhardNormalizer
        reinhard = TorchReinhardNormalizer()
        reinhard.fit(tiles[0].permute(2, 0, 1))
        theirs = {"macenko": lambda t: TorchMacenkoNormalizer().normalize(t, stains=False),
                  "reinhard": reinhard.normalize}
    except ImportError:
        theirs = {}
    for m in METHODS:
        ours = rate(lambda: [normalizers[m](b.to(dev)) for b in batches], len(tiles), dev)
        ref = ""
        if m in theirs and not cuda:
            ref = f"{rate(lambda: [theirs[m](t.permute(2, 0, 1)) for t in tiles], len(tiles), dev):.1f}"
        alone.add_row(m, f"{ours:.1f}", ref or "–")
    console.print(alone)

    regs = build_registries(get_plugin_manager())
    table = Table(title="one extraction step: to device, normalise, encode (tiles/s; share of none)")
    for col in ("encoder", "none", *METHODS):
        table.add_column(col, justify="left" if col == "encoder" else "right")
    for name in args.encoders.split(","):
        cls = regs.extractors.get(name)
        enc = cls(cls.Config(**reduced(cls, depth))).to(dev).eval()
        if enc.tile_size_px != 224:
            table.add_row(name, f"input {enc.tile_size_px} px, skipped", "", "", "")
            continue

        def step(stain: StainNormalizer | None) -> None:
            for b in batches:
                with torch.inference_mode():
                    x = b.to(dev, non_blocking=cuda)
                    x = stain(x)[0] if stain is not None else x.permute(0, 3, 1, 2).float().div_(255)
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                        enc(x).float().cpu()

        none = rate(lambda: step(None), len(tiles), dev)
        cells = [f"{r:.1f} ({100 * r / none:.0f} %)" for r in
                 (rate(lambda: step(normalizers[m]), len(tiles), dev) for m in METHODS)]
        table.add_row(name, f"{none:.1f}", *cells)
        enc = None
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
