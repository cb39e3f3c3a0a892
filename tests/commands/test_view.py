"""``milkit view`` (milkit/commands/view.py): binds 127.0.0.1 unless --host is given, serves what it is given."""

import socket

import pytest
import typer
from typer.testing import CliRunner

from milkit.commands.view import register
from milkit.errors import UsageError

pytest.importorskip("starlette", reason="milkit view needs the 'view' extra")


@pytest.fixture
def cli(monkeypatch):
    """Invoke ``milkit view ...``; uvicorn.run is recorded instead of run."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    runner = CliRunner()

    def invoke(*args):
        with socket.socket() as s:          # a port nobody uses
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return runner.invoke(app, ["view", *map(str, args), "--port", str(port)]), calls, port
    return invoke


@pytest.fixture
def features(tmp_path):
    import numpy as np
    from PIL import Image

    from milkit.data.feature_formats import write_bag

    coords = np.array([[0, 0], [224, 0], [0, 224], [224, 224]])
    write_bag(tmp_path / "features" / "a.h5", np.zeros((4, 8), np.float32), coords, {"patch_size_level0": 224})
    (tmp_path / "slides").mkdir()
    Image.new("RGB", (512, 512), (230, 160, 200)).save(tmp_path / "slides" / "a.png")
    return tmp_path


def test_binds_loopback_by_default(cli, features):
    res, calls, port = cli("--features", features / "features", "--slides", features / "slides")
    assert res.exit_code == 0, res.output
    (_, kw), = calls
    assert kw["host"] == "127.0.0.1" and kw["port"] == port
    assert f"http://127.0.0.1:{port}/" in res.output and "1 slides (1 with a slide file)" in res.output
    assert "warning" not in res.output


def test_an_explicit_host_is_honoured_with_a_warning(cli, features):
    res, calls, _ = cli("--features", features / "features", "--host", "0.0.0.0")
    assert res.exit_code == 0, res.output
    assert calls[0][1]["host"] == "0.0.0.0"
    assert "warning" in res.output and "no login" in res.output


def test_nothing_to_show_is_a_usage_error(cli):
    res, calls, _ = cli()
    assert isinstance(res.exception, UsageError) and "give one or more run dirs" in str(res.exception)
    assert calls == []


def test_loopback_only_answers_local_host_names(features):
    from starlette.testclient import TestClient

    from milkit.view.app import create_app
    from milkit.view.viewer import Viewer

    viewer = Viewer.open([], features_dirs=[features / "features"], slide_dirs=[features / "slides"])
    app = create_app(viewer)
    for host, status in (("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200),
                         ("attacker.example:8000", 400)):
        assert TestClient(app).get("/api/ping", headers={"host": host}).status_code == status, host
    assert TestClient(create_app(viewer, allowed_hosts=None)).get(
        "/api/ping", headers={"host": "workstation.lan:8000"}).status_code == 200
