"""Where the viewer listens: loopback unless the user names another address, then uvicorn.

The viewer has no login. Bound to 127.0.0.1 (the default) only this machine reaches it; from
another machine, forward the port over SSH (``ssh -L 8000:127.0.0.1:8000 host``). Binding any other
address is refused unless ``allow_remote`` is set, which ``milkit view`` does only when ``--host``
is given explicitly.
"""

import errno
import ipaddress
import socket
from typing import Any

from milkit.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, allow_remote: bool) -> str:
    """``host`` if the viewer may listen there; loopback always, anything else only with ``allow_remote``."""
    if not is_loopback(host) and not allow_remote:
        raise UsageError("--host", f"refusing to listen on {host}: the viewer has no login, so it binds loopback "
                                   f"({DEFAULT_HOST}) unless --host is given explicitly; from another machine use "
                                   f"an SSH tunnel (ssh -L {DEFAULT_PORT}:{DEFAULT_HOST}:{DEFAULT_PORT} host)")
    return host


def check_port_free(host: str, port: int) -> None:
    """Fail early, naming the option, when ``port`` is taken (uvicorn would only log it)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError("--port", f"port {port} on {host} is in use (another milkit view?); "
                                           f"choose another, e.g. --port {port + 1}") from exc
            raise UsageError("--host", f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def serve(app: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, allow_remote: bool = False) -> None:
    """Run ``app`` with uvicorn until interrupted (Ctrl-C).

    Everything alive at start (torch, the plugins, the run's tables: millions of objects) is collected
    once and frozen, so the garbage collector's full passes, which took 0.5 s each, never stall a tile.
    """
    import gc

    import uvicorn

    check_bind(host, allow_remote=allow_remote)
    check_port_free(host, port)
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning", access_log=False)
