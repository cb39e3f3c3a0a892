"""``milkit view RUN_DIR [RUN_B ...]``: a local web app to explore the slides, attention and reports of runs."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape


def register(app: typer.Typer) -> None:
    @app.command("view")
    def view(
        run_dirs: Annotated[list[Path] | None, typer.Argument(
            help="Run dirs written by `milkit run`; two or more are compared side by side.")] = None,
        slides: Annotated[list[Path] | None, typer.Option(
            "--slides", help="Folder of slide files, matched to slides by file name (repeatable).")] = None,
        features: Annotated[list[Path] | None, typer.Option(
            "--features", help="Feature folder to browse without a run (its patches and tissue contours).")] = None,
        port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
        host: Annotated[str | None, typer.Option(
            "--host", help="Address to listen on (default 127.0.0.1). Anything beyond loopback exposes the "
                           "viewer, which has no login, to the network.")] = None,
    ) -> None:
        """Serve a cohort page, deep-zoom slide pages with the attention overlay, top-k patches, tissue
        contours and reports, at http://127.0.0.1:PORT (use an SSH tunnel from another machine)."""
        from milkit.errors import MilkitError, UsageError

        try:
            from milkit.view.app import LOOPBACK_HOSTS, create_app
            from milkit.view.server import DEFAULT_HOST, check_bind, is_loopback, serve
        except ImportError as exc:
            raise MilkitError(f"milkit view needs the 'view' extra ({exc.name} is missing): "
                              "pip install 'milkit[view]'") from exc
        from milkit.view.viewer import Viewer

        if not run_dirs and not features:
            raise UsageError("RUN_DIR", "give one or more run dirs, or --features DIR (with --slides DIR)")
        if run_dirs and features:
            raise UsageError("--features", "a run brings its own feature folder; give run dirs or --features, "
                                           "not both")
        bind = check_bind(host or DEFAULT_HOST, allow_remote=host is not None)
        console = Console(stderr=True)
        viewer = Viewer.open(list(run_dirs or []), slide_dirs=list(slides or []), features_dirs=list(features or []))
        app_ = create_app(viewer, allowed_hosts=LOOPBACK_HOSTS if is_loopback(bind) else None)
        n_files = sum(viewer.catalogue.slide_file(s) is not None for s in viewer.catalogue.ids)
        what = ", ".join(f"{r.label} = {r.name}" for r in viewer.runs) or "feature folders " + ", ".join(
            map(str, features or []))
        console.print(escape(f"{len(viewer.catalogue.ids)} slides ({n_files} with a slide file); {what}"))
        if not is_loopback(bind):
            console.print(f"[yellow]warning:[/] listening on {escape(bind)}: anyone who can reach this machine "
                          "on that port sees these slides and runs (there is no login)")
        url_host = f"[{bind}]" if ":" in bind else bind
        console.print(f"milkit view: http://{escape(url_host)}:{port}/  (Ctrl-C to stop)")
        serve(app_, bind, port, allow_remote=host is not None)
