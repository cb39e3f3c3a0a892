"""No path traversal: what the browser names stays inside the run and static folders (milkit/view/paths.py,
the /runs/{i}/files and /static routes of milkit/view/app.py)."""

import json
import os

import anyio
import pytest

from milkit.view.paths import OutsideRootError, confined


@pytest.fixture
def root(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    (run / "plots" / "a.png").write_bytes(b"png")
    return run


@pytest.mark.parametrize("bad", ["../outside/secret.txt", "plots/../../outside/secret.txt", "/etc/passwd",
                                 "..", "plots\\..\\..\\outside", "", "a\x00b"])
def test_confined_refuses_leaving_the_root(root, bad):
    with pytest.raises(OutsideRootError):
        confined(root, bad)


def test_confined_refuses_a_symlink_pointing_outside_and_follows_one_inside(root):
    os.symlink(root.parent / "outside" / "secret.txt", root / "plots" / "leak.txt")
    os.symlink(root.parent / "outside", root / "outdir")
    os.symlink(root / "plots" / "a.png", root / "alias.png")
    for bad in ("plots/leak.txt", "outdir/secret.txt"):
        with pytest.raises(OutsideRootError, match="resolves outside"):
            confined(root, bad)
    assert confined(root, "alias.png") == (root / "plots" / "a.png").resolve()
    assert confined(root, "plots/./a.png") == (root / "plots" / "a.png").resolve()


def _raw_get(app, raw_path: str) -> tuple[int, bytes]:
    """Send ``raw_path`` to the ASGI app exactly as given (a client that does not normalise ``..``)."""
    from urllib.parse import unquote

    messages, requested = [], []

    async def receive():
        if requested:                         # the client waits for the response (the app stops listening then)
            await anyio.sleep_forever()
        requested.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote(raw_path), "raw_path": raw_path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


@pytest.fixture
def run_app(trained, tmp_path, view_registries):
    """The viewer over a copy of the trained run, with a secret beside it and symlinks inside it."""
    import shutil

    from milkit.view.app import create_app
    from milkit.view.viewer import Viewer

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", run / "plots" / "leak.txt")
    os.symlink(run / "recipe.toml", run / "plots" / "recipe_link.toml")
    viewer = Viewer.open([run], registries=view_registries)
    return create_app(viewer), run


@pytest.mark.parametrize("path", [
    "/runs/0/files/../secret.txt",
    "/runs/0/files/plots/../../secret.txt",
    "/runs/0/files/%2e%2e/secret.txt",
    "/runs/0/files/..%2fsecret.txt",
    "/runs/0/files/plots%2f..%2f..%2fsecret.txt",
    "/runs/0/files/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/runs/0/files//etc/passwd",
    "/runs/0/files/%2fetc%2fpasswd",
    "/runs/0/files/plots/leak.txt",
    "/runs/0/files/plots",
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/..%2f..%2fviewer.py",
    "/static//etc/passwd",
    "/api/slides/..%2f..%2fsecret.txt",
    "/api/slides/%2e%2e/slide.dzi",
])
def test_requests_cannot_leave_their_folder(run_app, path):
    app, _ = run_app
    status, body = _raw_get(app, path)
    assert status == 404, (path, body[:200])
    assert b"secret" not in body.replace(b"secret.txt", b"") and b"root:" not in body


def test_files_inside_are_served_and_symlinks_inside_followed(run_app):
    app, run = run_app
    status, body = _raw_get(app, "/runs/0/files/recipe.toml")
    assert status == 200 and body == (run / "recipe.toml").read_bytes()
    status, body = _raw_get(app, "/runs/0/files/plots/recipe_link.toml")
    assert status == 200 and body == (run / "recipe.toml").read_bytes()
    status, body = _raw_get(app, "/static/openseadragon/LICENSE.txt")
    assert status == 200 and b"OpenSeadragon contributors" in body


def test_refusals_say_why(client):
    res = client.get("/runs/0/files/%2e%2e/%2e%2e/etc/passwd")
    assert res.status_code == 404
    assert "refused path '../../etc/passwd'" in json.loads(res.text)["error"]
