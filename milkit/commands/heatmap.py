"""``milkit heatmap RUN_DIR --slide ID``: a trained model's attention drawn over the slide."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape


def register(app: typer.Typer) -> None:
    @app.command("heatmap")
    def heatmap(
        run_dir: Annotated[Path, typer.Argument(help="Run dir written by `milkit run`.")],
        slide: Annotated[str, typer.Option("--slide", help="Slide id (as in the cohort CSV).")],
        out: Annotated[Path | None, typer.Option("--out", help="PNG to write (default RUN_DIR/heatmaps/<slide>.png).")] = None,
        width: Annotated[int | None, typer.Option("--width", min=16, max=20000, help="Heatmap width in px (default 1024).")] = None,
        level: Annotated[int | None, typer.Option("--level", min=0, help="Draw at this pyramid level instead of --width.")] = None,
        fold: Annotated[int, typer.Option("--fold", min=0, help="Which fold's model to use.")] = 0,
        top_k: Annotated[int, typer.Option("--top-k", min=0, max=64, help="Highest/lowest scoring patches to show (0 = none).")] = 8,
        slide_file: Annotated[Path | None, typer.Option("--slide-file", help="Slide file, if the cohort has no slide_path.")] = None,
        cmap: Annotated[str, typer.Option("--cmap", help="Matplotlib colour map.")] = "jet",
        geojson: Annotated[bool, typer.Option("--geojson", help=(
            "Also write <png stem>.geojson: every patch as a QuPath tile with its attention as a measurement, "
            "plus the tissue contours (File > Import objects in QuPath)."))] = False,
    ) -> None:
        """Draw the attention of every patch of one slide over its thumbnail, plus its top/bottom patches."""
        from milkit.viz.attention import heatmap_for_run

        from milkit import cli_options as options
        from milkit.errors import UsageError

        if width is not None and level is not None:
            raise UsageError("--width/--level", "give either --width or --level, not both")
        if out is not None:
            options.out_file(out)
        console = Console(stderr=True)
        result = heatmap_for_run(run_dir, slide, out, fold=fold, width=width or 1024, level=level, top_k=top_k,
                                 slide_path=slide_file, cmap=cmap, geojson=geojson)
        for note in result.notes:
            console.print(f"[yellow]note:[/] {escape(note)}")
        h, w = result.overlay.shape[:2]
        console.print(escape(f"heatmap ({w} x {h} px, {result.n_patches:,} patches, {result.seconds:.1f} s): {result.png}"))
        if result.tiles_png is not None:
            console.print(escape(f"top/bottom {len(result.top)} patches: {result.tiles_png}"))
        if result.geojson is not None:
            console.print(escape(f"QuPath tiles with attention ({result.n_patches:,}): {result.geojson}"))
