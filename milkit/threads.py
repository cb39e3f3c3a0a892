"""CPU threads that share a busy machine fairly instead of spinning against it.

PyTorch's CPU kernels run on an OpenMP team whose idle threads spin (busy-wait) before they
sleep. Alone, that spinning is what makes small kernels fast; beside another CPU-bound process
it steals the cores the team waits for, and small-batch MIL training slows down 4-20x.
Passive waiting (``OMP_WAIT_POLICY=PASSIVE``) fixes the second case but costs a third of the
speed in the first (``benchmarks/bench_contention.py``). So milkit keeps OpenMP's spinning and
watches instead: a :class:`ThreadGovernor` measures how much CPU other processes take
(``/proc/stat`` minus this process) and runs torch on the cores that are left, down to one
thread (a team of one never spins).

Float results depend on the thread count, so a deterministic run (``[run] deterministic``, the
default) chooses its count once, when it starts, and keeps it (a resumed run reuses the count
its checkpoints were made with). With ``deterministic = false`` the governor re-checks every
second and the threads come back when the other process ends. A fixed count (``[run] threads``
or ``MILKIT_THREADS``) turns the governor off.
"""

import os
import time

ENV_THREADS = "MILKIT_THREADS"
CHECK_EVERY_S = 1.0
"""How often an adaptive governor looks at the machine (a read of two small /proc files)."""
PROBE_S = 0.1
"""How long the governor watches the machine when it starts."""
BUSY_CORE = 0.6
"""Another process counts as holding a core when it uses at least this share of one."""


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def requested_threads(requested: int | None = None) -> int | None:
    """``requested``, else ``$MILKIT_THREADS``; None when neither fixes the count."""
    from milkit.errors import UsageError

    if requested is not None:
        return requested
    env = os.environ.get(ENV_THREADS, "").strip()
    if not env:
        return None
    if not env.isdigit() or int(env) < 1:
        raise UsageError(ENV_THREADS, f"expected a whole number >= 1, got {env!r}")
    return int(env)


def _busy_seconds() -> tuple[float, float] | None:
    """(CPU seconds busy on the whole machine, CPU seconds used by this process), or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)   # all but idle and iowait
    return busy / tick, (int(own[11]) + int(own[12])) / tick                 # utime + stime


class ThreadGovernor:
    """Keeps torch's intra-op threads to the cores other processes leave free.

    Call :meth:`tick` often (every training step); it looks at the machine at most every
    ``CHECK_EVERY_S`` seconds and changes ``torch.set_num_threads`` only when the free cores change.
    """

    def __init__(self, requested: int | None = None, *, adapt: bool = True) -> None:
        self.fixed = self.requested = requested_threads(requested)
        self.cores = available_cores()
        self.threads = 0
        self._last = (time.monotonic(), _busy_seconds())
        if self.fixed is not None:
            self._set(self.fixed)
            return
        self._set(self.cores)
        if self._last[1] is not None:  # a first look, so a busy machine is seen before any work
            time.sleep(PROBE_S)
            self._look()
        if not adapt:
            self.fixed = self.threads

    def _set(self, n: int) -> None:
        import torch

        if n != self.threads:
            torch.set_num_threads(n)
            self.threads = n

    def tick(self) -> int:
        """Re-check the machine if it is time; returns the thread count in force."""
        if self.fixed is not None or self._last[1] is None:
            return self.threads
        if time.monotonic() - self._last[0] >= CHECK_EVERY_S:
            self._look()
        return self.threads

    def _look(self) -> None:
        now, sample = time.monotonic(), _busy_seconds()
        (then, before), self._last = self._last, (now, sample)
        if sample is None or before is None or now <= then:
            return
        others = ((sample[0] - before[0]) - (sample[1] - before[1])) / (now - then)   # cores used by others
        held = int(others / BUSY_CORE + 1e-9) if others >= BUSY_CORE else 0
        self._set(max(1, self.cores - held))


_GOVERNOR: ThreadGovernor | None = None


def govern(requested: int | None = None, *, adapt: bool = True) -> ThreadGovernor:
    """Start (or re-configure) the process's governor: a fixed count, else one thread per free core,
    chosen now (``adapt=False``) or re-checked as the work goes on."""
    global _GOVERNOR
    _GOVERNOR = ThreadGovernor(requested, adapt=adapt)
    return _GOVERNOR


def explain_choice(governor: ThreadGovernor) -> str | None:
    """A line saying why a run uses fewer threads than cores (None when it uses them all, or the user chose)."""
    if governor.requested is not None or governor.threads >= governor.cores:
        return None
    how = ("kept for the whole run, since float results depend on the thread count"
           if governor.fixed is not None else "re-checked every second")
    return (f"other processes keep {governor.cores - governor.threads} of {governor.cores} cores busy: torch runs on "
            f"{governor.threads} thread(s) ({how}); set [run] threads or MILKIT_THREADS to choose")


def tick() -> None:
    """Let the process's governor re-check the machine (a no-op before :func:`govern`)."""
    if _GOVERNOR is not None:
        _GOVERNOR.tick()
