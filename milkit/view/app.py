"""The viewer's HTTP routes (starlette): two pages, their JSON, Deep Zoom tiles, overlays, files.

Pages: ``/`` (cohort) and ``/slide/{slide_id}``. Data under ``/api/``. Static files (the pages'
scripts and the vendored OpenSeadragon) under ``/static/``, run-dir files (report.html, plots)
under ``/runs/{index}/files/``; both confined to their folder (:mod:`milkit.view.paths`). Slides
are named by id only. Served on loopback, only ``Host: localhost`` / ``127.0.0.1`` / ``[::1]`` is
answered, so another web site cannot reach the viewer through DNS rebinding.
"""

import json
import math
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from milkit.errors import MilkitError
from milkit.view.paths import OutsideRootError, confined
from milkit.view.viewer import Viewer

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
TILE_HEADERS = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}


def _clean(obj: Any) -> Any:
    """JSON-able copy: non-finite floats become null, numpy scalars plain numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(_clean(obj), allow_nan=False, separators=(",", ":"))
    return Response(body, status, headers={"X-Content-Type-Options": "nosniff", **(headers or {})},
                    media_type="application/json")


def _fold(request: Request) -> int | None:
    value = request.query_params.get("fold")
    if value in (None, ""):
        return None
    if not value.isdigit():
        raise MilkitError(f"fold must be a non-negative integer, got {value!r}")
    return int(value)


def create_app(viewer: Viewer, *, allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS) -> Starlette:
    """The ASGI app serving ``viewer``. ``allowed_hosts`` None answers any ``Host`` (``--host`` given)."""

    def page(name: str) -> Any:
        def endpoint(request: Request) -> Response:
            return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
        return endpoint

    def static(request: Request) -> Response:
        path = confined(STATIC, request.path_params["path"])
        if not path.is_file():
            raise MilkitError(f"no static file {request.path_params['path']!r}")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=600"})

    def run_file(request: Request) -> Response:
        return FileResponse(viewer.run_file(request.path_params["run"], request.path_params["path"]),
                            headers={"X-Content-Type-Options": "nosniff"})

    def ping(request: Request) -> Response:   # read by report.html opened from disk: any origin may ask
        return _json(viewer.ping(request.query_params.get("run")), headers={"Access-Control-Allow-Origin": "*"})

    def cohort(request: Request) -> Response:
        return _json(viewer.cohort())

    def slide(request: Request) -> Response:
        return _json(viewer.slide_info(request.path_params["slide"]))

    def dzi(request: Request) -> Response:
        return Response(viewer.dzi(request.path_params["slide"]), media_type="application/xml", headers=TILE_HEADERS)

    def tile(request: Request) -> Response:
        p = request.path_params
        return Response(viewer.tile(p["slide"], p["level"], p["col"], p["row"]), media_type="image/jpeg",
                        headers=TILE_HEADERS)

    def tissue(request: Request) -> Response:
        return _json(viewer.tissue(request.path_params["slide"]))

    def overlay(request: Request) -> Response:
        q = request.query_params
        png = viewer.overlay(request.path_params["run"], request.path_params["slide"], fold=_fold(request),
                             cmap=q.get("cmap", "jet"), normalise=q.get("normalise", "percentile"))
        return Response(png, media_type="image/png", headers=TILE_HEADERS)

    def top(request: Request) -> Response:
        k = request.query_params.get("k", "8")
        return _json(viewer.top(request.path_params["run"], request.path_params["slide"], fold=_fold(request),
                                k=int(k) if k.isdigit() else 8))

    def top_thumb(request: Request) -> Response:
        p = request.path_params
        return Response(viewer.top_thumbnail(p["run"], p["slide"], p["rank"], fold=_fold(request)),
                        media_type="image/jpeg", headers=TILE_HEADERS)

    def colours(request: Request) -> Response:
        return _json({"cmap": request.path_params["cmap"], "colours": viewer.colours(request.path_params["cmap"])})

    async def not_found(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, (OutsideRootError, MilkitError)) else 500
        return _json({"error": str(exc)}, status)

    s = "/api/slides/{slide}"
    r = "/api/runs/{run:int}/slides/{slide}"
    routes = [
        Route("/", page("cohort.html")),
        Route("/slide/{slide}", page("slide.html")),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/static/{path:path}", static),
        Route("/runs/{run:int}/files/{path:path}", run_file),
        Route("/api/ping", ping),
        Route("/api/cohort", cohort),
        Route(s, slide),
        Route(s + "/slide.dzi", dzi),
        Route(s + "/slide_files/{level:int}/{col:int}_{row:int}.jpeg", tile),
        Route(s + "/tissue.json", tissue),
        Route(r + "/overlay.png", overlay),
        Route(r + "/top.json", top),
        Route(r + "/top/{rank:int}.jpeg", top_thumb),
        Route("/api/colours/{cmap}", colours),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] if allowed_hosts else []
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={MilkitError: not_found, OutsideRootError: not_found})
