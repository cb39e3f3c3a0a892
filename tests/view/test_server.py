"""Where the viewer listens (milkit/view/server.py): loopback by default, beyond it only when asked."""

import socket

import pytest

from milkit.errors import UsageError
from milkit.view.server import DEFAULT_HOST, check_bind, check_port_free, is_loopback, serve


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                                ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.7", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_default_is_loopback():
    assert DEFAULT_HOST == "127.0.0.1" and check_bind(DEFAULT_HOST, allow_remote=False) == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.7"])
def test_beyond_loopback_is_refused_unless_asked(host):
    with pytest.raises(UsageError, match="refusing to listen on .*ssh -L 8000:127.0.0.1:8000"):
        check_bind(host, allow_remote=False)
    assert check_bind(host, allow_remote=True) == host


def test_serve_refuses_before_starting_anything(monkeypatch):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(k))
    with pytest.raises(UsageError, match="--host"):
        serve(object(), "0.0.0.0", 8000)
    assert started == []


def test_a_taken_port_names_the_option():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UsageError, match=f"--port: port {port} on 127.0.0.1 is in use.*--port {port + 1}"):
            check_port_free("127.0.0.1", port)
