"""CPU training on a shared machine: a fixed training job alone and beside one busy process, in one run.

    python benchmarks/bench_contention.py [--steps 150] [--repeats 3]

The job is milkit's training step (ABMIL + classification, bags of 300-1500 patches) with the
trainer's thread governor (milkit.threads) ticking every step, as ``milkit run`` does. Variants:
milkit's default (deterministic: the count is chosen from the machine's load when the run starts),
milkit with ``[run] deterministic = false`` (re-checked every second), torch's defaults (threads
fixed to the cores, OpenMP spinning) and passive OpenMP waiting (``OMP_WAIT_POLICY=PASSIVE``). Competitors: none; a
pure-Python busy loop; another torch process doing matrix products on every core. Each job runs
in a fresh process; its wall time is the median of ``--repeats``. The ratio column is contended /
alone for the same variant; milkit's target is <= 2.5x with one competing process on 2 cores,
and the same speed as torch's defaults when alone.
Run it on an otherwise quiet machine; results go in docs/benchmarks.md.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

JOB = r"""
import time, sys
import os
import torch
from milkit.components.aggregators.abmil import ABMIL, ABMILConfig
from milkit.components.heads.classification import Classification, ClassificationConfig
from milkit.model import Bags, MILModel
from milkit import threads

threads.govern(int(os.environ["FIXED"]) if os.environ.get("FIXED") else None, adapt=bool(os.environ.get("ADAPT")))
torch.manual_seed(0)
model = MILModel(ABMIL(ABMILConfig(embed_dim=256, attn_dim=128), in_dim=512),
                 Classification(ClassificationConfig(n_boot=0), in_dim=256, target_state={"classes": ["a", "b", "c"]}))
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
bags = [Bags(torch.randn(1, n, 512), torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, 2))
        for n in (300, 800, 1500, 500)]
targets = {"label": torch.tensor([1])}
for b in bags[:2]:  # warm-up
    model.training_loss(model(b, targets), targets).backward()
start = time.perf_counter()
for step in range(STEPS):
    threads.tick()
    opt.zero_grad()
    b = bags[step % len(bags)]
    model.training_loss(model(b, targets), targets).backward()
    opt.step()
print(time.perf_counter() - start, torch.get_num_threads())
"""

COMPETITORS = {
    "none": None,
    "python busy loop": "while True: pass",
    "torch matmul (all cores)": "import torch\na = torch.randn(384, 384)\nwhile True: a @ a",
}


def run_job(steps: int, env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", JOB.replace("STEPS", str(steps))], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MILKIT_THREADS", "FIXED", "ADAPT")}
    cores = str(len(os.sched_getaffinity(0)))
    policies = {"milkit default (count chosen at start)": {},
                "milkit, deterministic = false (re-checked)": {"ADAPT": "1"},
                "torch defaults (fixed threads, spinning)": {"FIXED": cores},
                "passive OpenMP wait, fixed threads": {"FIXED": cores, "OMP_WAIT_POLICY": "PASSIVE"}}
    print(f"cores available: {len(os.sched_getaffinity(0))}; job: ABMIL training, {args.steps} steps; "
          f"median of {args.repeats}")
    print("| threads | competitor | seconds | ratio to alone |")
    print("|---|---|---|---|")
    for policy, extra in policies.items():
        alone = None
        for name, code in COMPETITORS.items():
            times = []
            for _ in range(args.repeats):
                rival = None
                if code is not None:  # the rival keeps torch's defaults: the worst neighbour
                    rival = subprocess.Popen([sys.executable, "-c", code], env=base)
                    time.sleep(1.0)
                try:
                    times.append(run_job(args.steps, {**base, **extra}))
                finally:
                    if rival is not None:
                        rival.kill()
                        rival.wait()
            t = statistics.median(times)
            alone = t if code is None else alone
            print(f"| {policy} | {name} | {t:.2f} | {t / alone:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
