"""``milkit extract``: slides -> one feature HDF5 per slide (resumable, shardable, failure-tolerant)."""

import os
from pathlib import Path
from typing import Annotated

import typer

from milkit.errors import DataError, Issue, RecipeError


def expand_slides(items: list[Path]) -> list[Path]:
    """Files as given; folders contribute their slide files (by extension, not recursive)."""
    from milkit.slides import SLIDE_SUFFIXES

    out: list[Path] = []
    for item in items:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.name.lower().endswith(SLIDE_SUFFIXES))
            if not found:
                raise DataError(f"{item}: no slide files ({', '.join(SLIDE_SUFFIXES)})")
            out += found
        elif item.exists():
            out.append(item)
        else:
            raise DataError(f"slide not found: {item}")
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"``; without it, torchrun's RANK/WORLD_SIZE when WORLD_SIZE > 1."""
    if text is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return (int(os.environ.get("RANK", "0")), world) if world > 1 else None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise RecipeError([Issue("--shard", None, text, "expected i/n, e.g. --shard 0/4")]) from None
    if not 0 <= i < n:
        raise RecipeError([Issue("--shard", None, text, f"need 0 <= i < n, got {i}/{n}")])
    return i, n


def extractor_table(recipe: Path | None, extractor: str | None, sets: list[str]) -> tuple[dict, Path]:
    """The ``[extractor]`` table from the recipe (if any), ``--extractor`` and ``--set`` applied."""
    from milkit.recipe import load_recipe, parse_override

    table: dict = {}
    base = Path.cwd()
    if recipe is not None:
        loaded = load_recipe(recipe)
        table = dict(loaded.data.get("extractor") or {})
        base = loaded.base_dir
    if extractor is not None:
        table["name"] = extractor
    for item in sets:
        key = item.split("=", 1)[0]
        parts, value = parse_override(item if "." in key else f"extractor.{item}")
        if parts[0] != "extractor" or len(parts) != 2:
            raise RecipeError([Issue(f"--set {item}", None, key,
                                     "milkit extract takes extractor.KEY=VALUE (or KEY=VALUE)")])
        table[parts[1]] = value
    return table, base


def register(app: typer.Typer) -> None:
    """Add ``extract`` to the app."""

    @app.command("extract")
    def extract(
        slides: Annotated[list[Path], typer.Argument(help="Slide files or folders of slides.")],
        out: Annotated[Path, typer.Option("--out", help="Output folder: <slide_id>.h5, report, segmentation/.")],
        extractor: Annotated[str | None, typer.Option("--extractor", help="Encoder name (milkit plugins).")] = None,
        sets: Annotated[list[str] | None, typer.Option("--set", help="extractor.KEY=VALUE (TOML value).")] = None,
        recipe: Annotated[Path | None, typer.Option("--recipe", help="Use the extractor table of this recipe.")] = None,
        shard: Annotated[str | None, typer.Option("--shard", help="i/n: process every n-th slide from i.")] = None,
        mpp_csv: Annotated[Path | None, typer.Option(
            "--mpp-csv", help="CSV of slide_id (or slide file name),mpp: level-0 um/px per slide.")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = True,
    ) -> None:
        """Extract patch features for SLIDES into --out; exit 1 if any slide failed (see the report)."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from milkit.extract.build import build_extraction
        from milkit.extract.mpp_table import read_mpp_table, unknown_slides
        from milkit.extract.pipeline import extract_slides
        from milkit.plugins import get_plugin_manager
        from milkit.registry import build_registries
        from milkit.slides import slide_id_from_path

        from milkit import cli_options as options

        from milkit.threads import govern

        out = options.out_dir(out)
        device = options.device(device)
        govern()  # MILKIT_THREADS, else one per core other processes leave free
        table, base = extractor_table(recipe, extractor, sets or [])
        source = str(recipe) if recipe is not None else "command line"
        encoder, settings = build_extraction(table, build_registries(get_plugin_manager()), base_dir=base,
                                             source=source)
        paths = expand_slides(slides)
        slide_mpp = read_mpp_table(mpp_csv) if mpp_csv is not None else None
        if slide_mpp:
            typo = unknown_slides(slide_mpp, (slide_id_from_path(p) for p in paths))
            if typo:
                raise DataError(f"{mpp_csv}: {len(typo)} slide id(s) match no slide given: {', '.join(typo[:5])}; "
                                "ids are file names without their extension")
        summary = extract_slides(paths, out, extractor=encoder, settings=settings, shard=parse_shard(shard),
                                 device=device, progress=progress, slide_mpp=slide_mpp)
        view = Table(title=escape(f"milkit extract -> {out}"), caption=escape(f"report: {summary.report_path}"))
        for col in ("slide", "status", "tiles", "s", "reason"):
            view.add_column(col, overflow="fold")
        style = {"done": "green", "skipped": "dim", "failed": "red"}
        for o in summary.outcomes:
            view.add_row(escape(o.slide_id), f"[{style[o.status]}]{o.status}[/]", str(o.n_tiles), f"{o.seconds:.1f}",
                         escape(o.reason))
        console = Console()
        console.print(view)
        console.print(f"{len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed")
        if summary.failed:
            raise typer.Exit(1)
