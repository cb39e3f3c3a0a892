"""Atomic job claims, so several processes (torchrun ranks or a cluster array job) share one compare dir."""

import json
import os
import socket
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(job_dir: Path) -> bool:
    """Claim ``job_dir`` for this process (O_CREAT|O_EXCL, atomic on local and NFSv3+ file systems).

    A claim left by a dead process on this host is taken over; a claim held by a live
    process, or by another host, is respected.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / ".claim"
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                return False
            if owner.get("host") == me["host"] and owner.get("pid") != me["pid"] and not _alive(int(owner.get("pid", 0))):
                path.unlink(missing_ok=True)  # stale: its process died
                continue
            return owner.get("host") == me["host"] and owner.get("pid") == me["pid"]
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    return False


def release(job_dir: Path) -> None:
    (job_dir / ".claim").unlink(missing_ok=True)
