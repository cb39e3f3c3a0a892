"""The default demo cohort, generated once into a per-user cache and shared between processes."""

import fcntl
import os
from pathlib import Path
from typing import Any

from milkit.demo.cohort import VERSION, is_complete, make_demo_cohort

DEMO_ARGS: dict[str, Any] = {"n_slides": 60, "seed": 0}
"""Arguments of :func:`make_demo_cohort` that define the default demo."""


def cache_root() -> Path:
    """``$MILKIT_CACHE`` if set, else ``~/.cache/milkit``."""
    env = os.environ.get("MILKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "milkit"


def demo_cohort(*, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Path of the default demo's ``cohort.csv``, generating it on first use (~15 s, ~55 MB).

    The demo lives in ``<cache_dir or cache_root()>/demo-v3``. An exclusive ``fcntl`` lock on
    ``demo-v3.lock`` makes concurrent callers wait for one generation instead of racing;
    a folder left half-written by an interrupted run lacks its ``.complete`` marker and is
    generated again.

    Args:
        cache_dir: Cache root to use instead of :func:`cache_root`.
        progress: Show a progress bar while generating.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    out_dir = root / VERSION
    if is_complete(out_dir, **DEMO_ARGS):
        return out_dir / "cohort.csv"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not is_complete(out_dir, **DEMO_ARGS):  # another process may have finished while we waited
                make_demo_cohort(out_dir, progress=progress, **DEMO_ARGS)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out_dir / "cohort.csv"
