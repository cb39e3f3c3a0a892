"""Patch-encoder throughput: encoder only vs end-to-end extraction, for every registered encoder.

For each encoder (default: all of ``milkit encoders`` plus the generic ones):

* **encoder only**: batches of random uint8 tiles at the encoder's input side, moved, scaled and
  encoded exactly as ``milkit extract`` does it (``inference_mode``, bf16 autocast on CUDA), after
  one warm-up batch;
* **end to end**: ``extract_slides`` (what ``milkit extract`` calls: segmentation, tiling, reading,
  resizing, encoding, atomic HDF5 writes) on a synthetic 40x slide (``bench_reading.synthetic_wsi``);
* **e2e / encoder**: the share of the encoder's speed that survives the pipeline. Near 100 %:
  compute limits; well below: reading, resizing or writing does.

On CPU the transformers run at reduced depth (``--depth``, default 2 blocks, full width and input
size), so the table ranks encoders and shows the pipeline's overhead, not full-size speed; on CUDA
they run at full size unless ``--depth`` is given. Each row is one process's numbers; compare ratios
within one run (CPU timings swing when other processes share the cores).

    python benchmarks/bench_encoders.py [--encoders uni,phikon,...] [--depth 2] [--device auto]
        [--batch 32] [--tiles 128] [--size 4096] [--compile] [--channels-last]
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
DEPTH_KEYS = ("depth", "layers")
"""Config keys that set a transformer's number of blocks (ViT presets, CONCH: depth; PLIP: layers)."""


def reduced(cls: Any, depth: int | None) -> dict[str, Any]:
    """Config overrides: ``depth`` blocks where the encoder has such a key (others run in full)."""
    if depth is None:
        return {}
    return {k: depth for k in DEPTH_KEYS if k in cls.Config.model_fields}


def encoder_only(enc: torch.nn.Module, dev: torch.device, batch: int, tiles: int) -> float:
    """tiles/s over ``tiles`` random tiles in batches of ``batch`` (after one warm-up batch)."""
    px, cuda = enc.tile_size_px, dev.type == "cuda"
    data = torch.randint(0, 256, (batch, px, px, 3), dtype=torch.uint8)

    def step() -> None:
        x = data.to(dev, non_blocking=cuda).permute(0, 3, 1, 2).float().div_(255)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            enc(x)

    step()
    n = max(1, tiles // batch)
    if cuda:
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if cuda:
        torch.cuda.synchronize(dev)
    return n * batch / (time.perf_counter() - t0)


def end_to_end(enc: torch.nn.Module, slide: Path, settings: Any, device: str) -> tuple[float, int]:
    """(tiles/s, tiles) of ``extract_slides`` on ``slide``, into a temporary folder."""
    from milkit.extract.pipeline import extract_slides

    out = Path(tempfile.mkdtemp(prefix="milkit-bench-enc-"))
    try:
        t0 = time.perf_counter()
        summary = extract_slides([slide], out, extractor=enc, settings=settings, device=device, progress=False)
        secs = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if summary.failed:
        raise RuntimeError(summary.failed[0][1])
    n = sum(o.n_tiles for o in summary.outcomes)
    return n / secs, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", help="comma-separated registered names (default: every registered encoder)")
    p.add_argument("--depth", type=int, default=None, help="transformer blocks (default: 2 on CPU, full on CUDA)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=None, help="tiles per batch (default 32 on CPU, 256 on CUDA)")
    p.add_argument("--tiles", type=int, default=None, help="tiles timed encoder-only (default 4 batches)")
    p.add_argument("--size", type=int, default=4096, help="side of the synthetic 40x slide, level-0 px")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "milkit-bench-reading"))
    p.add_argument("--compile", action="store_true", help="extract with compile = true (torch.compile)")
    p.add_argument("--channels-last", action="store_true", help="convert conv encoders to channels-last")
    args = p.parse_args()

    from rich.console import Console
    from rich.table import Table

    sys.path.insert(0, str(HERE))
    from bench_reading import synthetic_wsi

    from milkit.extract.pipeline import resolve_device
    from milkit.extract.settings import ExtractionSettings
    from milkit.plugins import get_plugin_manager
    from milkit.registry import build_registries

    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    depth = args.depth if args.depth is not None else (None if cuda else 2)
    batch = args.batch or (256 if cuda else 32)
    tiles = args.tiles or 4 * batch
    regs = build_registries(get_plugin_manager())
    names = args.encoders.split(",") if args.encoders else regs.extractors.names()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    slide = synthetic_wsi(Path(args.work) / f"synthetic-40x-{args.size}.tiff", args.size)
    settings = ExtractionSettings(target_mpp=0.5, tile_size_px=224, batch_size=batch, compile=args.compile)
    torch.manual_seed(0)
    table = Table(title=f"patch encoders on {dev} ({torch.get_num_threads()} threads), batch {batch}, "
                        f"depth {depth or 'full'}{', compiled' if args.compile else ''}")
    for col in ("encoder", "params (M, as run)", "input px", "encoder only (tiles/s)", "end to end (tiles/s)",
                "e2e / encoder"):
        table.add_column(col, justify="left" if col == "encoder" else "right")
    for name in names:
        cls = regs.extractors.get(name)
        try:
            enc = cls(cls.Config(**reduced(cls, depth))).to(dev).eval()
            if args.channels_last:
                enc = enc.to(memory_format=torch.channels_last)
            params = sum(t.numel() for t in enc.parameters()) / 1e6
            alone = encoder_only(enc, dev, batch, tiles)
            e2e, n = end_to_end(enc, slide, settings, str(dev))
            table.add_row(name, f"{params:.1f}", str(enc.tile_size_px), f"{alone:.1f}", f"{e2e:.1f} ({n} tiles)",
                          f"{100 * e2e / alone:.0f} %")
        except Exception as exc:  # noqa: BLE001 - one encoder's failure is a row, not the end of the table
            table.add_row(name, "", "", f"[red]{type(exc).__name__}: {exc}"[:80], "", "")
        finally:
            enc = None
            if cuda:
                torch.cuda.empty_cache()
    Console(width=160).print(table)


if __name__ == "__main__":
    sys.exit(main())
