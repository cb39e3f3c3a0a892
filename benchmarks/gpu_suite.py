"""GPU benchmark suite (issue 19): every speed and memory target of the H200 in one timed run.

    bash benchmarks/gpu_suite.sh [OUT_DIR]                    # the entry point (picks the mode)
    python benchmarks/gpu_suite.py --out DIR [--device cuda] [--budget 450]
    python benchmarks/gpu_suite.py --out DIR --quick --device cpu --budget 170

What it measures (each benchmark in its own try/except; one failure never loses the others):

1. HistGen ``fixed`` and ``faithful`` at full paper size (D = 1024, d = 512, regions of 96, 512
   prototypes, memory 2048 x 512, top-k 512, vocabulary 2000, 100-token reports, batch of one
   slide, Adam): training-step ms and peak memory at N = 10k and 100k patches (quick: 500), fp32
   and bf16 autocast. Targets (``fixed``): <= 8 ms / <= 1 GiB at 10k, <= 25 ms / <= 4 GiB at 100k.
2. HistGen generation (``fixed``, decoder only, beam 3, EOS masked so every report runs to 100
   tokens, the worst case, as in bench_histgen.py): slides/s for a batch of 64 slides at N = 10k
   (target >= 100) and s for one slide (target <= 0.1).
3. ABMIL and TransMIL (classification head, 2 classes) training steps at N = 10k / 100k.
4. Encoder-only tiles/s (bf16 autocast on CUDA, as ``milkit extract`` runs it; fp32 on CPU) at
   224 px, batch 256 (quick: 8, depth 2): ViT-L/16, ViT-H/14 and ViT-g/14 through the ``vit``
   extractor's config (random init), and ``dinov2-vitl14``.
5. End to end: ``extract_slides`` (what ``milkit extract`` calls) on a synthetic 40x slide from
   bench_reading.synthetic_wsi (generated in a background process while 1-4 run) with the ``vit``
   defaults (ViT-L/16, UNI-style), against encoder-only at the same batch (targets >= 2000 tiles/s
   and >= 80 % of encoder-only).
6. For every target missed on CUDA: a torch.profiler summary (top 10 CUDA kernels by time, kernel
   launches per step, peak memory) in the JSON and the Markdown.

Components come from the registries by name (``regs.aggregators.get("abmil")``...), never by
module path. Results are rewritten after every row to ``OUT/gpu_suite.json`` and
``OUT/gpu_suite.md``, so a timeout still leaves everything measured so far. A global deadline
(``--budget`` seconds from start) skips whatever would not fit.

Timing: warm-up calls, torch.cuda.synchronize() around every timed call, median of the repeats
(wall clock, host overhead included). Peak memory: CUDA ``max_memory_allocated`` over one step
after ``reset_peak_memory_stats`` (parameters, optimizer state and inputs included); CPU:
``milkit.profiling.PeakMemory``, the bytes of tensors created during the step and alive at once.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(HERE), str(REPO)):            # benchmarks/ for bench_reading; the repo for an uninstalled milkit
    if p not in sys.path:
        sys.path.append(p)

import torch  # noqa: E402

GiB, MiB = 2**30, 2**20
VOCAB, T, D = 2000, 100, 1024               # as bench_histgen.py

# ----------------------------------------------------------------------------------------------
# the suite: rows, deadline, incremental output


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.quick = args.quick
        self.rows: list[dict[str, Any]] = []
        self.profiles: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []
        self.done: list[str] = []
        self.status = "running"
        self.meta = environment(self)
        self._writes = 0
        self._regs = None
        self.slide_proc: subprocess.Popen | None = None
        self.slide_path: Path | None = None
        self.smoke_profiled = False

    # time ---------------------------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def no_time_for(self, case: str, need: float) -> bool:
        """True (and the case is recorded as skipped) when fewer than ``need`` seconds are left."""
        if self.left() >= need:
            return False
        self.skip(case, f"deadline: {self.left():.0f} s left, needs about {need:.0f} s")
        return True

    @property
    def regs(self):
        if self._regs is None:
            from milkit.plugins import get_plugin_manager
            from milkit.registry import build_registries

            self._regs = build_registries(get_plugin_manager())
        return self._regs

    # rows ---------------------------------------------------------------------------------
    def add(self, benchmark: str, size: str, dtype: str, value: float | None, unit: str,
            target: tuple[str, float] | None = None, notes: str = "", raw: dict | None = None) -> dict:
        """One result row; ``target`` = ("<=" or ">=", number) in ``unit``. Returns the row."""
        met = "n.a."
        tgt = ""
        if target is not None:
            op, num = target
            tgt = f"{'≤' if op == '<=' else '≥'} {num:,g} {unit}" + (" (full size)" if self.quick else "")
            if self.cuda and value is not None and math.isfinite(value):
                met = "yes" if (value <= num if op == "<=" else value >= num) else "no"
        row = {"benchmark": benchmark, "size": size, "dtype": dtype, "value": value, "unit": unit,
               "target": tgt, "met": met, "notes": notes, "raw": raw or {}, "t_s": round(self.elapsed(), 1)}
        self.rows.append(row)
        print(f"[{self.elapsed():6.1f}s] {benchmark} | {size} | {dtype} | {fmt(value)} {unit} | {tgt or '-'} | {met}"
              + (f" | {notes}" if notes else ""), flush=True)
        self.write()
        return row

    def error(self, where: str, exc: BaseException) -> None:
        tb = traceback.format_exc(limit=6)
        self.errors.append({"where": where, "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": tb[-4000:]})
        print(f"[{self.elapsed():6.1f}s] ERROR in {where}: {type(exc).__name__}: {exc}", flush=True)
        self.write()

    def skip(self, where: str, why: str) -> None:
        self.skipped.append({"where": where, "why": why})
        print(f"[{self.elapsed():6.1f}s] skipped {where}: {why}", flush=True)
        self.write()

    # output -------------------------------------------------------------------------------
    def write(self) -> None:
        self._writes += 1
        doc = {"suite": "milkit gpu_suite (issue 19)", "status": self.status, "elapsed_s": round(self.elapsed(), 1),
               "meta": self.meta, "rows": self.rows, "profiles": self.profiles, "errors": self.errors,
               "skipped": self.skipped, "benchmarks_done": self.done}
        atomic_write(self.out / "gpu_suite.json", json.dumps(doc, indent=1, default=str), self._writes)
        atomic_write(self.out / "gpu_suite.md", markdown(doc), self._writes)

    # running ------------------------------------------------------------------------------
    def run(self, name: str, fn: Callable[[], None], need_s: float) -> None:
        """Run benchmark ``fn`` unless fewer than ``need_s`` seconds are left."""
        if self.args.only and name not in self.args.only:
            return
        if name in self.args.skip:
            self.skip(name, "--skip")
            return
        if self.left() < need_s:
            self.skip(name, f"deadline: {self.left():.0f} s left, needs about {need_s:.0f} s")
            return
        print(f"[{self.elapsed():6.1f}s] === {name} ({self.left():.0f} s left)", flush=True)
        try:
            fn()
        except Exception as exc:  # one benchmark's failure never loses the others
            self.error(name, exc)
        finally:
            self.done.append(name)
            free(self)
            self.write()


def atomic_write(path: Path, text: str, n: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{n}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def free(S: Suite) -> None:
    gc.collect()
    if S.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def sync(S: Suite) -> None:
    if S.cuda:
        torch.cuda.synchronize()


def environment(S: Suite) -> dict[str, Any]:
    m: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(S.dev),
        "quick": S.quick, "budget_s": S.args.budget, "argv": sys.argv[1:],
    }
    if S.cuda:
        p = torch.cuda.get_device_properties(S.dev)
        m.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GiB, 1), sm_count=p.multi_processor_count,
                 cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                 tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    try:
        m["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                         text=True, timeout=5).stdout.strip() or None
    except Exception:
        m["git_commit"] = None
    try:
        import milkit

        m["milkit"] = getattr(milkit, "__version__", "?")
        m["milkit_path"] = str(Path(milkit.__file__).parent)
    except Exception as exc:
        m["milkit"] = f"import failed: {exc}"
    return m


# ----------------------------------------------------------------------------------------------
# timing, peak memory, profiling


def measure(S: Suite, step: Callable[[], Any], *, warmup: int, reps: int, cap_s: float) -> dict[str, Any]:
    """Median wall time of ``step`` (synchronised). The first call is timed on its own; when it
    alone exceeds ``cap_s`` (or the deadline is near) it is the only sample. Otherwise ``warmup - 1``
    more untimed calls, then ``reps`` timed ones, fewer when they would exceed ``cap_s``."""
    sync(S)
    t = time.perf_counter()
    step()
    sync(S)
    first = time.perf_counter() - t
    if first > cap_s or S.left() < 3 * first + 5:
        return {"median_s": first, "times_s": [first], "first_s": first, "note": "1 run (first call, no warm-up)"}
    last = first
    for _ in range(max(0, warmup - 1)):
        t = time.perf_counter()
        step()
        sync(S)
        last = time.perf_counter() - t
    n = max(1, min(reps, int(cap_s / max(last, 1e-6))))
    times = []
    for _ in range(n):
        if S.left() < 2 * first + 5 and times:
            break
        sync(S)
        t = time.perf_counter()
        step()
        sync(S)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "times_s": [round(x, 6) for x in times], "first_s": round(first, 4),
            "note": ""}


def peak_of(S: Suite, step: Callable[[], Any]) -> float:
    """Peak bytes of one call of ``step`` (see module docstring)."""
    if S.cuda:
        sync(S)
        torch.cuda.reset_peak_memory_stats(S.dev)
        step()
        sync(S)
        return float(torch.cuda.max_memory_allocated(S.dev))
    from milkit.profiling import PeakMemory

    with PeakMemory() as m:
        step()
    return float(m.peak)


def timing_plan(S: Suite) -> dict[str, Any]:
    return {"warmup": 3, "reps": 10, "cap_s": 4.0} if S.cuda else {"warmup": 1, "reps": 2, "cap_s": 3.0}


def maybe_profile(S: Suite, case: str, step: Callable[[], Any], rows: list[dict], steps: int = 3,
                  est_s: float | None = None) -> None:
    """torch.profiler summary of ``step`` when a row of ``case`` missed its target on CUDA; on the
    CPU in quick mode, once, on the first case cheaper than 0.5 s a step, as a smoke test of this
    code path."""
    missed = [r for r in rows if r and r["met"] == "no"]
    smoke = (not S.cuda and S.quick and not S.smoke_profiled and not S.args.no_profile
             and est_s is not None and est_s < 0.5)
    if not (missed or S.args.profile_all and S.cuda or smoke) or S.args.no_profile:
        return
    if len(S.profiles) >= S.args.max_profiles:
        S.skip(f"profile {case}", f"--max-profiles {S.args.max_profiles} reached")
        return
    if S.left() < 20:
        S.skip(f"profile {case}", f"deadline: {S.left():.0f} s left")
        return
    try:
        S.smoke_profiled = S.smoke_profiled or smoke
        prof = profile_summary(S, step, steps)
        prof.update(case=case, missed=[f"{r['benchmark']} {r['size']} {r['dtype']}: {fmt(r['value'])} {r['unit']} "
                                       f"(target {r['target']})" for r in missed],
                    smoke_test=bool(smoke and not missed))
        S.profiles.append(prof)
        S.write()
        print(f"[{S.elapsed():6.1f}s] profiled {case}: {prof.get('kernels_per_step', prof.get('ops_per_step'))} "
              f"{'kernels' if S.cuda else 'ops'}/step", flush=True)
    except Exception as exc:
        S.error(f"profile {case}", exc)


def profile_summary(S: Suite, step: Callable[[], Any], steps: int) -> dict[str, Any]:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if S.cuda else [])
    step()                                                        # warm (the case was measured already)
    sync(S)
    if S.cuda:
        torch.cuda.reset_peak_memory_stats(S.dev)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync(S)
    wall = (time.perf_counter() - t) / steps
    events = prof.events()
    out: dict[str, Any] = {"steps": steps, "wall_ms_per_step_profiled": round(wall * 1e3, 3)}
    if S.cuda:
        out["peak_mib"] = round(torch.cuda.max_memory_allocated(S.dev) / MiB, 1)
        kern: dict[str, list[float]] = {}
        n_kernels = n_copies = 0
        busy_us = 0.0
        for e in events:
            if getattr(e, "device_type", None) != DeviceType.CUDA:
                continue
            dur = float(e.time_range.elapsed_us())
            name = e.name
            if name.startswith(("Memcpy", "Memset")) or "memcpy" in name.lower() or "memset" in name.lower():
                n_copies += 1
            else:
                n_kernels += 1
            busy_us += dur
            k = kern.setdefault(name, [0.0, 0])
            k[0] += dur
            k[1] += 1
        launches = sum(1 for e in events if getattr(e, "device_type", None) == DeviceType.CPU
                       and e.name in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"))
        out.update(kernels_per_step=round(n_kernels / steps, 1), copies_per_step=round(n_copies / steps, 1),
                   launch_calls_per_step=round(launches / steps, 1),
                   gpu_busy_ms_per_step=round(busy_us / steps / 1e3, 3),
                   gpu_busy_fraction=round(busy_us / steps / 1e6 / wall, 3) if wall else None,
                   top=top10(kern, steps))
    else:
        ops: dict[str, list[float]] = {}
        n_ops = 0
        for e in events:
            if getattr(e, "device_type", None) != DeviceType.CPU or not e.name.startswith("aten::"):
                continue
            n_ops += 1
            k = ops.setdefault(e.name, [0.0, 0])
            k[0] += float(e.self_cpu_time_total)
            k[1] += 1
        out.update(ops_per_step=round(n_ops / steps, 1),
                   top=top10(ops, steps))
    return out


def top10(acc: dict[str, list[float]], steps: int) -> list[dict[str, Any]]:
    """The 10 names with the most time in ``acc`` ({name: [total us, calls]}), per step."""
    total = sum(v[0] for v in acc.values()) or 1.0
    return [{"name": n, "ms_per_step": round(v[0] / steps / 1e3, 4), "calls_per_step": round(v[1] / steps, 1),
             "share": round(v[0] / total, 4)} for n, v in sorted(acc.items(), key=lambda kv: -kv[1][0])[:10]]


# ----------------------------------------------------------------------------------------------
# models and inputs (components by registered name only)


def bags(n: int, b: int, dev: torch.device):
    """B bags of n random D-dim patches on a 100-wide grid of 512-px patches (as bench_histgen.py)."""
    from milkit.model import Bags

    xy = torch.stack([torch.arange(n) % 100, torch.arange(n) // 100], 1).float() * 512
    return Bags(torch.randn(b, n, D, device=dev), torch.ones(b, n, dtype=torch.bool, device=dev),
                xy.expand(b, n, 2).to(dev))


def report_target_state(max_len: int = T) -> dict[str, Any]:
    """A 2000-word tokenizer and 100-token reports, as bench_histgen.py builds them."""
    from milkit.histgen.tokenizer import Tokenizer

    tok = Tokenizer({1: "<unk>", **{i: f"w{i}" for i in range(2, VOCAB + 1)}})
    return {"tokenizer": tok.to_dict(), "max_seq_length": max_len}


def build_mil(S: Suite, aggregator: str, head: str, agg_kw: dict | None = None, max_len: int = T):
    from milkit.model import MILModel

    acls = S.regs.aggregators.get(aggregator)
    hcls = S.regs.heads.get(head)
    agg = acls(acls.Config(**(agg_kw or {})), in_dim=D)
    hcfg = hcls.Config()
    if head == "report":
        state = report_target_state(max_len)
    else:
        state = hcls.fit_targets(hcfg, [{"slide_id": "a", "label": "a"}, {"slide_id": "b", "label": "b"}])
    h = hcls(hcfg, in_dim=agg.out_dim, target_state=state)
    return MILModel(agg, h).to(S.dev)


def targets_for(S: Suite, head: str) -> dict[str, torch.Tensor]:
    if head == "report":
        ids = torch.randint(1, VOCAB + 1, (1, T), device=S.dev)
        ids[:, 0] = ids[:, -1] = 0
        return {"ids": ids, "lengths": torch.tensor([T], device=S.dev)}
    return {"label": torch.tensor([1], device=S.dev)}


def train_case(S: Suite, model, n: int, head: str, bf16: bool):
    """A training-step closure (forward, loss, backward, Adam) on one bag of n patches."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    x = bags(n, 1, S.dev)
    tg = targets_for(S, head)

    def step() -> None:
        with torch.autocast(S.dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.head.loss(model(x, tg), tg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sizes(S: Suite) -> list[int]:
    return [500] if S.quick else [10_000, 100_000]


def n_label(n: int) -> str:
    return f"N={n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"N={n}"


def dtypes(S: Suite) -> list[tuple[str, bool]]:
    return [("fp32", False), ("bf16 autocast", True)]


# ----------------------------------------------------------------------------------------------
# 1 + 3: training steps


def bench_train(S: Suite, label: str, aggregator: str, head: str, agg_kw: dict | None,
                targets: dict[int, tuple[float, float]] | None) -> None:
    """Training-step rows for every size and dtype; ``targets`` = {n: (max ms, max GiB)}."""
    model = build_mil(S, aggregator, head, agg_kw)
    params = sum(p.numel() for p in model.parameters())
    plan = timing_plan(S)
    last = 0.0                                              # seconds the previous case took
    for n in sizes(S):
        for dname, bf16 in dtypes(S):
            case = f"{label} train {n_label(n)} {dname}"
            if S.no_time_for(case, max(15.0, 1.3 * last + 5)):
                continue
            t_case = time.monotonic()
            try:
                step = train_case(S, model, n, head, bf16)
                m = measure(S, step, **plan)
                peak = peak_of(S, step) if S.left() > 3 * m["median_s"] + 5 else None
                tg = (targets or {}).get(n if not S.quick else 10_000)
                size = f"{n_label(n)}, batch 1" + (f", {params / 1e6:.1f} M params" if n == sizes(S)[0] else "")
                r1 = S.add(f"{label} train step", size, dname, m["median_s"] * 1e3, "ms",
                           ("<=", tg[0]) if tg else None, m["note"], {"times_s": m["times_s"], "first_s": m["first_s"]})
                r2 = S.add(f"{label} train peak memory", n_label(n), dname, None if peak is None else peak / MiB, "MiB",
                           ("<=", tg[1] * 1024) if tg else None, "" if peak is not None else "skipped: deadline")
                maybe_profile(S, case, step, [r1, r2], est_s=m["median_s"])
            except Exception as exc:
                S.error(case, exc)
            finally:
                step = None  # noqa: F841 - drop the optimizer and the inputs before the next case
                free(S)
                last = time.monotonic() - t_case


def bench_histgen_fixed(S: Suite) -> None:
    bench_train(S, "HistGen fixed", "histgen", "report", {"variant": "fixed"},
                {10_000: (8.0, 1.0), 100_000: (25.0, 4.0)})


def bench_histgen_faithful(S: Suite) -> None:
    bench_train(S, "HistGen faithful", "histgen", "report", {"variant": "faithful"}, None)


def bench_abmil(S: Suite) -> None:
    bench_train(S, "ABMIL", "abmil", "classification", None, None)


def bench_transmil(S: Suite) -> None:
    bench_train(S, "TransMIL", "transmil", "classification", None, None)


# ----------------------------------------------------------------------------------------------
# 2: generation


def bench_generation(S: Suite) -> None:
    """Decoder-only beam-3 generation forced to 100 tokens (EOS logit masked, bench_histgen.py)."""
    tokens = T if not S.quick else 20                       # quick: 20-token reports (CPU time)
    model = build_mil(S, "histgen", "report", {"variant": "fixed"}, max_len=tokens)
    model.eval()
    n = 10_000 if not S.quick else 500
    batch = 64 if not S.quick else 4
    last = 0.0
    plan = {"warmup": 2, "reps": 5, "cap_s": 8.0} if S.cuda else {"warmup": 1, "reps": 1, "cap_s": 3.0}
    bias = model.head.decoder.logit.bias
    saved = bias.detach()[0].item()
    with torch.no_grad():
        bias[0] = -1e9                                             # EOS never chosen: worst case
    try:
        for dname, bf16 in (dtypes(S) if S.cuda else [("fp32", False)]):
            case = f"HistGen generation {dname}"
            if S.no_time_for(case, max(20.0, 1.3 * last + 5)):
                continue
            t_case = time.monotonic()
            with torch.inference_mode(), torch.autocast(S.dev.type, dtype=torch.bfloat16, enabled=bf16):
                out1 = model.encode(bags(n, 1, S.dev))
                t = time.perf_counter()
                outb = model.encode(bags(n, batch, S.dev))
                sync(S)
                enc_s = time.perf_counter() - t
            gen = model.head.generate

            def one() -> None:
                with torch.inference_mode(), torch.autocast(S.dev.type, dtype=torch.bfloat16, enabled=bf16):
                    ids = gen(out1, "beam")
                assert bool((ids != 0).all()), "EOS masking failed: a report ended early"

            def many() -> None:
                with torch.inference_mode(), torch.autocast(S.dev.type, dtype=torch.bfloat16, enabled=bf16):
                    ids = gen(outb, "beam")
                assert bool((ids != 0).all()), "EOS masking failed: a report ended early"

            m1 = measure(S, one, **plan)
            r1 = S.add("HistGen generation, 1 slide (decoder only)", f"{n_label(n)}, beam 3, {tokens} tokens", dname,
                       m1["median_s"], "s/slide", ("<=", 0.1), m1["note"], {"times_s": m1["times_s"]})
            maybe_profile(S, f"{case} 1 slide", one, [r1], steps=1)
            mb = measure(S, many, **plan)
            rate = batch / mb["median_s"]
            r2 = S.add(f"HistGen generation, batch of {batch} (decoder only)", f"{n_label(n)}, beam 3, {tokens} tokens",
                       dname, rate, "slides/s", (">=", 100.0), mb["note"], {"times_s": mb["times_s"]})
            S.add(f"HistGen generation, batch of {batch} incl. encoder", f"{n_label(n)}, beam 3, {tokens} tokens",
                  dname, batch / (mb["median_s"] + enc_s), "slides/s", None,
                  f"encoder {enc_s:.3f} s for the batch (one run, after the 1-slide warm-up)")
            maybe_profile(S, f"{case} batch {batch}", many, [r2], steps=1)
            del out1, outb
            free(S)
            last = time.monotonic() - t_case
    finally:
        with torch.no_grad():
            bias[0] = saved


# ----------------------------------------------------------------------------------------------
# 4: encoders


def encoder_specs(S: Suite) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registered extractor, config) at full size; quick mode sets depth 2."""
    specs = [
        ("ViT-L/16 (vit defaults, UNI-style)", "vit", {}),
        ("ViT-H/14 (vit, Virchow2-style)", "vit",
         {"patch_size": 14, "embed_dim": 1280, "depth": 32, "num_heads": 16, "mlp": "swiglu_packed",
          "mlp_ratio": 5.3375, "num_registers": 4, "no_embed_class": True, "pool": "cls+avg"}),
        ("ViT-g/14 (vit, H-optimus-0-style)", "vit",
         {"patch_size": 14, "embed_dim": 1536, "depth": 40, "num_heads": 24, "mlp": "swiglu_packed",
          "mlp_ratio": 5.33334, "num_registers": 4, "no_embed_class": True}),
        ("DINOv2 ViT-L/14 (dinov2-vitl14)", "dinov2-vitl14", {}),
    ]
    if S.quick:
        specs = [(lab, name, {**kw, "depth": 2}) for lab, name, kw in specs]
    return specs


def build_extractor(S: Suite, name: str, kw: dict[str, Any]):
    cls = S.regs.extractors.get(name)
    cfg = cls.Config(**kw)
    if S.cuda:
        try:
            with torch.device(S.dev):                      # random init on the GPU: seconds, not minutes
                return cls(cfg).to(S.dev).eval()
        except Exception:
            free(S)
    return cls(cfg).to(S.dev).eval()


def encoder_rate(S: Suite, enc, batch: int) -> dict[str, Any]:
    """tiles/s of ``enc`` on a [batch, 3, px, px] tensor in [0, 1] already on the device, with
    bf16 autocast on CUDA exactly as the extraction pipeline runs it."""
    px = enc.tile_size_px
    x = torch.rand(batch, 3, px, px, device=S.dev)

    def step() -> None:
        with torch.inference_mode(), torch.autocast(S.dev.type, dtype=torch.bfloat16, enabled=S.cuda):
            enc(x)

    plan = {"warmup": 2, "reps": 5, "cap_s": 4.0} if S.cuda else {"warmup": 1, "reps": 2, "cap_s": 4.0}
    m = measure(S, step, **plan)
    m["tiles_s"] = batch / m["median_s"]
    m["step"] = step
    return m


def bench_encoders(S: Suite) -> None:
    batch = 256 if not S.quick else 8
    dname = "bf16 autocast" if S.cuda else "fp32"
    last = 0.0
    for label, name, kw in encoder_specs(S):
        case = f"encoder {label}"
        if S.no_time_for(case, max(25.0 if S.cuda else 10.0, 1.5 * last + 5)):
            continue
        t_case = time.monotonic()
        try:
            enc = build_extractor(S, name, kw)
            params = sum(p.numel() for p in enc.parameters())
            m = encoder_rate(S, enc, batch)
            depth = getattr(enc.config, "depth", "?")
            S.add(f"encoder only: {label}", f"batch {batch}, {enc.tile_size_px} px, depth {depth}, "
                  f"{params / 1e6:.0f} M params", dname, m["tiles_s"], "tiles/s", None, m["note"],
                  {"times_s": m["times_s"]})
            S.meta.setdefault("encoder_tiles_s", {})[label] = m["tiles_s"]
        except Exception as exc:
            S.error(case, exc)
        finally:
            enc = m = None  # noqa: F841
            free(S)
            last = time.monotonic() - t_case


# ----------------------------------------------------------------------------------------------
# 5: end to end


def start_slide(S: Suite) -> None:
    """Generate the synthetic 40x slide (bench_reading.synthetic_wsi) in a background process."""
    work = Path(S.args.work)
    work.mkdir(parents=True, exist_ok=True)
    S.slide_path = work / f"synthetic-40x-{S.args.slide_size}.tiff"
    if S.slide_path.exists() or (S.args.only and "e2e" not in S.args.only) or "e2e" in S.args.skip:
        return
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from bench_reading import synthetic_wsi; synthetic_wsi(Path(sys.argv[2]), int(sys.argv[3]))")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    S.slide_proc = subprocess.Popen([sys.executable, "-c", code, str(HERE), str(S.slide_path), str(S.args.slide_size)],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=lambda: os.nice(19))      # stay out of the timed host threads' way
    S.meta["slide_started_s"] = round(S.elapsed(), 1)
    proc = S.slide_proc

    def note_ready() -> None:
        proc.wait()
        S.meta["slide_ready_s"] = round(S.elapsed(), 1)

    threading.Thread(target=note_ready, daemon=True).start()


def wait_slide(S: Suite, reserve: float) -> Path:
    if S.slide_proc is not None:
        while S.slide_proc.poll() is None:
            if S.left() < reserve:
                raise TimeoutError(f"the synthetic slide was not ready with {S.left():.0f} s left")
            time.sleep(0.5)
        err = S.slide_proc.stderr.read() if S.slide_proc.stderr else ""
        if S.slide_proc.returncode:
            raise RuntimeError(f"synthetic_wsi failed (exit {S.slide_proc.returncode}): {err[-1500:]}")
        S.meta["slide_waited_until_s"] = round(S.elapsed(), 1)
        S.slide_proc = None
    assert S.slide_path is not None and S.slide_path.exists(), f"no slide at {S.slide_path}"
    return S.slide_path


def bench_e2e(S: Suite) -> None:
    batch = 256 if not S.quick else 8
    quick_kw = {"depth": 2} if S.quick else {}
    slide = wait_slide(S, reserve=25)
    size = f"synthetic 40x {S.args.slide_size}² px → 224 px at 0.5 µm/px"
    dname = "bf16 autocast" if S.cuda else "fp32"
    if S.args.e2e_cli:
        return e2e_cli(S, slide, batch, quick_kw, size, dname)
    try:
        from milkit.extract.build import build_extraction
        from milkit.extract.pipeline import extract_slides
    except ImportError as exc:                               # package moved: fall back to the CLI
        S.error("e2e (in-process import; falling back to the milkit extract CLI)", exc)
        return e2e_cli(S, slide, batch, quick_kw, size, dname)

    table = {"name": "vit", "target_mpp": 0.5, "tile_size_px": 224, "batch_size": batch, **quick_kw}
    if S.cuda:
        with torch.device(S.dev):
            encoder, settings = build_extraction(table, S.regs)
    else:
        encoder, settings = build_extraction(table, S.regs)
    encoder.to(S.dev).eval()
    enc = encoder_rate(S, encoder, batch)
    S.add("encoder only: ViT-L/16 (as in e2e)", f"batch {batch}, 224 px", dname, enc["tiles_s"], "tiles/s", None,
          enc["note"], {"times_s": enc["times_s"]})
    runs = []
    tiles = 0
    for i in range(3 if S.cuda else 1):
        if i and (S.left() < 2 * runs[-1] + 20 or runs[-1] > 30):
            break
        sync(S)
        t = time.perf_counter()
        tiles = e2e_once(S, extract_slides, slide, encoder, settings)
        sync(S)
        runs.append(time.perf_counter() - t)
    secs = statistics.median(runs)
    rate = tiles / secs
    cores = os.cpu_count() or 1
    workers = settings.num_workers if settings.num_workers is not None else \
        f"auto = {min(8, cores - 1) if S.cuda else min(4, cores // 4)}"
    note = (f"{tiles:,} tiles, {len(runs)} run(s) of extract_slides: segmentation + reading ({workers} reader "
            "processes) + encoding + HDF5 writing")
    r1 = S.add("e2e extract_slides, vit ViT-L/16", f"{size}, batch {batch}", dname, rate, "tiles/s", (">=", 2000.0),
               note, {"runs_s": runs, "tiles": tiles})
    r2 = S.add("e2e / encoder-only, ViT-L/16", f"batch {batch}", dname, 100.0 * rate / enc["tiles_s"], "%",
               (">=", 80.0), f"encoder only {enc['tiles_s']:,.0f} tiles/s")
    maybe_profile(S, "e2e extract_slides (main process: encoder kernels; GPU busy share = how input-bound)",
                  lambda: e2e_once(S, extract_slides, slide, encoder, settings), [r1, r2], steps=1)


def e2e_once(S: Suite, extract_slides, slide: Path, encoder, settings) -> int:
    """One extract_slides run into a fresh folder (deleted after); the number of tiles encoded."""
    out = Path(tempfile.mkdtemp(prefix="gpu-suite-e2e-", dir=S.args.work))
    try:
        summary = extract_slides([slide], out, extractor=encoder, settings=settings, device=str(S.dev), progress=False)
        if summary.failed:
            raise RuntimeError(f"extraction failed: {summary.failed}")
        return sum(o.n_tiles for o in summary.outcomes if o.status == "done")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def e2e_cli(S: Suite, slide: Path, batch: int, quick_kw: dict, size: str, dname: str) -> None:
    """Fallback: ``python -m milkit extract`` in a subprocess (process start and model build included)."""
    out = Path(tempfile.mkdtemp(prefix="gpu-suite-cli-", dir=S.args.work))
    sets = [f"batch_size={batch}", *(f"{k}={v}" for k, v in quick_kw.items())]
    cmd = [sys.executable, "-m", "milkit", "extract", str(slide), "--out", str(out), "--extractor", "vit",
           "--device", str(S.dev), "--no-progress"] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (os.environ.get("PYTHONPATH"), str(REPO)) if x)}
    try:
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10, S.left() - 10), env=env)
        secs = time.perf_counter() - t
        if p.returncode:
            raise RuntimeError(f"milkit extract exited {p.returncode}: {p.stdout[-800:]} {p.stderr[-800:]}")
        import h5py

        tiles = sum(h5py.File(f, "r")["features"].shape[0] for f in out.glob("*.h5"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    S.add("e2e milkit extract CLI (whole process), vit ViT-L/16", f"{size}, batch {batch}", dname, tiles / secs,
          "tiles/s", (">=", 2000.0), f"{tiles:,} tiles in {secs:.1f} s incl. process start and model build")


# ----------------------------------------------------------------------------------------------
# Markdown


def markdown(doc: dict[str, Any]) -> str:
    m = doc["meta"]
    dev = m.get("gpu") or f"CPU ({m.get('cpu_count')} cores, {m.get('torch_threads')} torch threads)"
    lines = [f"# milkit GPU suite (issue 19): {doc['status']}", "",
             f"{m.get('date')} · {dev} · torch {m.get('torch')}"
             + (f" (CUDA {m.get('cuda')}, TF32 matmul {m.get('tf32_matmul')})" if m.get("gpu") else "")
             + f" · {'quick sizes' if m.get('quick') else 'full sizes'} · {doc['elapsed_s']:.0f} s of a "
             f"{m.get('budget_s'):.0f} s budget · commit {m.get('git_commit')}", "",
             "| benchmark | size | dtype | value | unit | target | met |", "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        val = fmt(r["value"]) + (" *" if r.get("notes", "").startswith("1 run") else "")
        lines.append(f"| {r['benchmark']} | {r['size']} | {r['dtype']} | {val} | {r['unit']} | {r['target'] or '–'} "
                     f"| {r['met']} |")
    if any(r.get("notes", "").startswith("1 run") for r in doc["rows"]):
        lines += ["", "\\* one run only (the first call exceeded the per-case time cap: no warm-up)."]
    if not m.get("gpu"):
        lines += ["", "met = n.a.: targets are H200 targets and are only judged on CUDA."]
    lines += ["", "Peak memory: " + ("CUDA `max_memory_allocated` over one step (parameters, Adam state and inputs "
                                     "included)." if m.get("gpu") else "`milkit.profiling.PeakMemory`, the bytes of "
                                     "tensors created during one step and alive at once (parameters, inputs and Adam "
                                     "state excluded).")]
    notes = [r for r in doc["rows"] if r.get("notes") and not r["notes"].startswith("1 run")]
    if notes:
        lines += ["", "Notes:"] + [f"- {r['benchmark']} ({r['size']}, {r['dtype']}): {r['notes']}" for r in notes]
    for p in doc["profiles"]:
        head = f"## Profile: {p['case']}" + (" (CPU smoke test of the profiler path, no target missed)"
                                              if p.get("smoke_test") else "")
        lines += ["", head, ""]
        for miss in p.get("missed", []):
            lines.append(f"- missed: {miss}")
        if "kernels_per_step" in p:
            lines.append(f"- {p['steps']} profiled step(s): {p['kernels_per_step']} kernels/step "
                         f"({p['launch_calls_per_step']} launch calls, {p['copies_per_step']} copies/memsets), "
                         f"GPU busy {p['gpu_busy_ms_per_step']} ms of {p['wall_ms_per_step_profiled']} ms wall "
                         f"({100 * (p['gpu_busy_fraction'] or 0):.0f} %), peak {p['peak_mib']:,.0f} MiB")
            what = "CUDA kernel"
        else:
            lines.append(f"- {p['steps']} profiled step(s): {p['ops_per_step']} aten ops/step (nested included), "
                         f"{p['wall_ms_per_step_profiled']} ms wall/step (profiled)")
            what = "CPU op (self time)"
        lines += ["", f"| {what} | ms/step | calls/step | share |", "|---|---|---|---|"]
        for k in p.get("top", []):
            name = k["name"].replace("|", "\\|")
            name = name if len(name) <= 100 else name[:97] + "..."
            lines.append(f"| `{name}` | {k['ms_per_step']:.3f} | {k['calls_per_step']} | {100 * k['share']:.1f} % |")
    if doc["errors"]:
        lines += ["", "## Errors", ""] + [f"- **{e['where']}**: {e['error'].splitlines()[0][:400]}"
                                          for e in doc["errors"]]
    if doc["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- {s['where']}: {s['why']}" for s in doc["skipped"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------


BENCHMARKS: list[tuple[str, Callable[[Suite], None], float, float]] = [
    # name, function, seconds needed to start it (CUDA, CPU quick)
    ("histgen-fixed", bench_histgen_fixed, 30, 20),
    ("generation", bench_generation, 30, 15),
    ("encoders", bench_encoders, 40, 20),
    ("abmil", bench_abmil, 15, 5),
    ("transmil", bench_transmil, 15, 5),
    ("e2e", bench_e2e, 40, 15),
    ("histgen-faithful", bench_histgen_faithful, 25, 15),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_suite_out", help="output folder")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:0, cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (N = 500, depth-2 encoders, batch 8)")
    p.add_argument("--budget", type=float, default=None, help="seconds from start (default 450 on CUDA, 170 on CPU)")
    p.add_argument("--slide-size", type=int, default=None, help="synthetic slide side, level-0 px (32768; quick 4096)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "milkit-gpu-suite"),
                   help="folder for the synthetic slide and scratch output (not OUT)")
    p.add_argument("--only", default="", help="comma list of benchmarks: " + ",".join(b[0] for b in BENCHMARKS))
    p.add_argument("--skip", default="", help="comma list of benchmarks to skip")
    p.add_argument("--max-profiles", type=int, default=10)
    p.add_argument("--profile-all", action="store_true", help="profile every case on CUDA, missed or not")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    p.add_argument("--e2e-cli", action="store_true", help="e2e through `python -m milkit extract` (whole process)")
    a = p.parse_args()
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if not a.device.startswith("cuda") and not a.quick:
        print("note: no CUDA device; full sizes on the CPU take very long (use --quick)", flush=True)
    a.budget = a.budget if a.budget is not None else (450.0 if a.device.startswith("cuda") else 170.0)
    a.slide_size = a.slide_size or (4096 if a.quick else 32768)
    a.only = [s for s in a.only.split(",") if s]
    a.skip = [s for s in a.skip.split(",") if s]
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    S = Suite(a)

    def on_term(signum, frame) -> None:  # the outer `timeout`: leave a consistent file behind
        S.status = f"killed by signal {signum} after {S.elapsed():.0f} s (partial)"
        if S.slide_proc is not None and S.slide_proc.poll() is None:
            S.slide_proc.kill()
        S.write()
        os._exit(124)

    signal.signal(signal.SIGTERM, on_term)
    S.write()
    print(f"gpu_suite: device {S.dev}{' (' + S.meta.get('gpu', '') + ')' if S.cuda else ''}, "
          f"{'quick' if a.quick else 'full'} sizes, budget {a.budget:.0f} s, out {S.out}", flush=True)
    start_slide(S)
    try:
        S.regs  # noqa: B018 - fail early and visibly if the registries cannot be built
    except Exception as exc:
        S.error("build_registries", exc)
    for name, fn, need_cuda, need_cpu in BENCHMARKS:
        S.run(name, lambda fn=fn: fn(S), need_cuda if S.cuda else need_cpu)
    if S.slide_proc is not None and S.slide_proc.poll() is None:
        S.slide_proc.kill()
    missed = [r for r in S.rows if r["met"] == "no"]
    S.status = (f"finished in {S.elapsed():.0f} s: {len(S.rows)} rows, {len(missed)} targets missed, "
                f"{len(S.errors)} errors, {len(S.skipped)} skipped")
    S.write()
    print(S.status, flush=True)
    print(f"wrote {S.out / 'gpu_suite.json'} and {S.out / 'gpu_suite.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
