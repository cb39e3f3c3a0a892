"""Atomic writes that honour the umask: every file milkit writes goes through here.

A temp file beside the target is written, given the mode a plain ``open()`` would give
(``0o666 & ~umask``, where ``tempfile.mkstemp`` would leave ``0o600``), then renamed over
the target, so a reader (or a resumed run) never sees a half-written file.
"""

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode a new file gets from ``open()`` under the current umask."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temp path to write ``path``'s content to (with any library); renamed over ``path`` on success,
    deleted on failure. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path | str, data: bytes) -> None:
    """``path.write_bytes(data)``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path | str, text: str) -> None:
    """``path.write_text(text, encoding="utf-8")``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
