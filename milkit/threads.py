"""CPU threads that share a busy machine fairly instead of spinning against it.

PyTorch's CPU kernels run on an OpenMP pool whose idle threads spin (busy-wait) for a while
before sleeping. On a machine shared with another CPU-bound process that spinning steals the
cores the other threads wait for, and small-batch MIL training slows down 10-20x. milkit
therefore asks OpenMP to wait passively (``OMP_WAIT_POLICY=PASSIVE``), which it must do before
torch is first imported: ``import milkit`` does it, unless the variable is already set or
``MILKIT_OPENMP=0``. Measured in ``benchmarks/bench_contention.py`` (docs/benchmarks.md).

Intra-op threads: ``[run] threads``, else ``MILKIT_THREADS``, else one per core this process
may run on.
"""

import os

ENV_THREADS = "MILKIT_THREADS"
ENV_OPENMP = "MILKIT_OPENMP"


def configure_openmp() -> None:
    """Passive OpenMP waiting, unless the user chose a policy or opted out; a no-op after torch loaded."""
    if os.environ.get(ENV_OPENMP, "1") != "0":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_count(requested: int | None = None) -> int:
    """``requested``, else ``$MILKIT_THREADS``, else :func:`available_cores`."""
    from milkit.errors import UsageError

    if requested is not None:
        return requested
    env = os.environ.get(ENV_THREADS, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UsageError(ENV_THREADS, f"expected a whole number >= 1, got {env!r}")
        return int(env)
    return available_cores()


def set_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads (see :func:`thread_count`) and return the number set."""
    import torch

    n = thread_count(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
