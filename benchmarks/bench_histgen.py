"""HistGen in milkit: training-step time, peak memory and beam-search speed (prints tables).

Usage:
    python benchmarks/bench_histgen.py            # N = 2k, 10k on CPU (+ 30k, 100k on CUDA)
    python benchmarks/bench_histgen.py --quick    # N = 2k only, fewer repeats
    python benchmarks/bench_histgen.py --variant faithful --device cuda

Setup: full-size model (D = 1024, d = 512, S = 96, K = 512, M = 2048, top-k 512), vocabulary
2000, 100-token reports, batch of one slide, Adam. Peak memory: CUDA ``max_memory_allocated``
(parameters and inputs included); CPU: :class:`milkit.profiling.PeakMemory`, the bytes
of tensors created during the step and alive at once (parameters, inputs and optimizer state
excluded). Generation: beam 3 (and greedy), untrained model with EOS masked so every report
runs to the 100-token limit (worst case), encoder excluded.
"""

import argparse
import math
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from milkit.histgen.aggregator import HistGen, HistGenConfig
from milkit.histgen.cmn import reference_topk_attention, topk_memory_attention
from milkit.histgen.report_head import Report, ReportConfig
from milkit.histgen.tokenizer import Tokenizer
from milkit.model import Bags, MILModel
from milkit.profiling import PeakMemory

VOCAB, T, D = 2000, 100, 1024


def build(variant: str, device: torch.device) -> MILModel:
    tok = Tokenizer({1: "<unk>", **{i: f"w{i}" for i in range(2, VOCAB + 1)}})
    agg = HistGen(HistGenConfig(variant=variant), in_dim=D)
    head = Report(ReportConfig(), in_dim=agg.out_dim, target_state={"tokenizer": tok.to_dict(), "max_seq_length": T})
    return MILModel(agg, head).to(device)


def bags(n: int, b: int, device: torch.device) -> Bags:
    xy = torch.stack([torch.arange(n) % 100, torch.arange(n) // 100], 1).float() * 512
    return Bags(torch.randn(b, n, D, device=device), torch.ones(b, n, dtype=torch.bool, device=device),
                xy.expand(b, n, 2).to(device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model: MILModel, opt: torch.optim.Optimizer, x: Bags, targets: dict, bf16: bool) -> None:
    with torch.autocast(x.feats.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model.head.loss(model(x, targets), targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_train(model: MILModel, n: int, device: torch.device, bf16: bool, repeats: int) -> tuple[float, float]:
    """(median ms per step, peak MiB)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    x = bags(n, 1, device)
    ids = torch.randint(1, VOCAB + 1, (1, T), device=device)
    ids[:, 0] = ids[:, -1] = 0
    targets = {"ids": ids, "lengths": torch.tensor([T], device=device)}
    train_step(model, opt, x, targets, bf16)                          # warm-up (allocates Adam state)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        train_step(model, opt, x, targets, bf16)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        train_step(model, opt, x, targets, bf16)
        peak = torch.cuda.max_memory_allocated()
    else:
        with PeakMemory() as m:
            train_step(model, opt, x, targets, bf16)
        peak = m.peak
    return statistics.median(times), peak / 2**20


@torch.no_grad()
def time_generation(model: MILModel, n: int, batch: int, device: torch.device, mode: str) -> tuple[float, float]:
    """(seconds for one slide, slides per second for a batch), decoder only, forced to 100 tokens."""
    model.eval()
    bias = model.head.decoder.logit.bias
    saved = bias[0].item()
    bias[0] = -1e9                                                    # no EOS: worst case
    try:
        out1 = model.encode(bags(n, 1, device))
        outb = model.encode(bags(n, batch, device))
        model.head.generate(out1, mode)                               # warm-up
        res = []
        for out, k in ((out1, 1), (outb, batch)):
            sync(device)
            t0 = time.perf_counter()
            ids = model.head.generate(out, mode)
            sync(device)
            assert bool((ids != 0).all()), "EOS masking failed"
            res.append((time.perf_counter() - t0) / k)
    finally:
        bias[0] = saved
    return res[0], 1.0 / res[1]


def cmn_memory(device: torch.device) -> tuple[float, float]:
    """Peak MiB of one forward+backward of the visual memory query (512 x 2048 slots, top-512)."""
    def run(fn) -> float:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(*s, generator=g).to(device).requires_grad_() for s in
                   ((1, 8, 512, 64), (1, 8, 2048, 64), (1, 8, 2048, 64)))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn(q, k, v, 512).sum().backward()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        with PeakMemory() as m:
            fn(q, k, v, 512).sum().backward()
        return m.peak / 2**20
    return run(topk_memory_attention), run(reference_topk_attention)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 2k only, fewer repeats, smaller batches")
    p.add_argument("--variant", default="fixed", choices=["fixed", "faithful"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    a = p.parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sizes = [2_000] if a.quick else [2_000, 10_000] + ([30_000, 100_000] if device.type == "cuda" else [])
    repeats, batch = (2, 4) if a.quick else (3, 16)
    model = build(a.variant, device)
    console = Console()
    console.print(f"HistGen '{a.variant}' on {device} ({torch.get_num_threads()} threads), "
                  f"{sum(p.numel() for p in model.parameters()):,} parameters, V = {VOCAB}, T = {T}")

    t = Table(title="training step (batch 1, T = 100)")
    for col in ("N", "regions", "fp32 ms", "fp32 peak MiB", "bf16 ms", "bf16 peak MiB"):
        t.add_column(col, justify="right")
    for n in sizes:
        ms, mib = time_train(model, n, device, False, repeats)
        bf = time_train(model, n, device, True, repeats) if device.type == "cuda" else None
        t.add_row(f"{n:,}", str(math.ceil(n / 95)), f"{ms:,.0f}", f"{mib:,.0f}",
                  f"{bf[0]:,.0f}" if bf else "-", f"{bf[1]:,.0f}" if bf else "-")
    console.print(t)

    g = Table(title=f"generation, 100 tokens forced (encoder excluded; batch = {batch} slides)")
    for col in ("decoding", "N", "s / slide (1 slide)", "slides / s (batch)"):
        g.add_column(col, justify="right")
    for mode in ("beam", "greedy"):
        one, rate = time_generation(model, sizes[0], batch, device, mode)
        g.add_row(mode + (" (3)" if mode == "beam" else ""), f"{sizes[0]:,}", f"{one:.2f}", f"{rate:.2f}")
    console.print(g)

    ours, ref = cmn_memory(device)
    c = Table(title="visual memory query, forward + backward (512 queries, 2048 slots, top-512)")
    for col in ("implementation", "peak MiB"):
        c.add_column(col, justify="right")
    c.add_row("milkit: scatter top-k weights, dense matmul", f"{ours:,.0f}")
    c.add_row("HistGen: expand + gather", f"{ref:,.0f}")
    console.print(c)


if __name__ == "__main__":
    main()
