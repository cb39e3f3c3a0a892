"""``milkit extract``: slides -> one feature HDF5 per slide (resumable, shardable, failure-tolerant)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from milkit.errors import DataError, Issue, RecipeError

if TYPE_CHECKING:
    from rich.table import Table

    from milkit.extract.report import ExtractionSummary


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


def extractor_tables(recipe: Path | None, names_arg: str | None, sets: list[str]) -> tuple[list[dict], Path]:
    """One ``[extractor]`` table per encoder: the recipe's table (if any), the names of ``--extractor``
    (``uni`` or ``uni,conch-v1.5``) and ``--set`` applied. ``--set KEY=VALUE`` (or ``extractor.KEY``)
    goes to every table; ``--set NAME.KEY=VALUE`` only to encoder NAME's."""
    from milkit.recipe import load_recipe, parse_override

    table: dict = {}
    base = Path.cwd()
    if recipe is not None:
        loaded = load_recipe(recipe)
        table = dict(loaded.data.get("extractor") or {})
        base = loaded.base_dir
    names = [table.get("name")]
    if names_arg is not None:
        names = [n.strip() for n in names_arg.split(",")]
        if len(set(names)) != len(names) or not all(names):
            raise RecipeError([Issue("--extractor", None, names_arg, "expected NAME or NAME,NAME,... with each "
                                     "encoder once, e.g. --extractor uni,conch-v1.5")])
    tables = [{**table, "name": n} for n in names] if names_arg is not None else [table]
    for item in sets:
        key = item.split("=", 1)[0].strip()
        owner = max((n for n in names if isinstance(n, str) and key.startswith(n + ".")), key=len, default=None)
        if owner is not None:
            parts, value = parse_override(f"extractor.{item[len(owner) + 1:]}")
            chosen = [t for t in tables if t["name"] == owner]
        else:
            parts, value = parse_override(item if "." in key else f"extractor.{item}")
            chosen = tables
        if parts[0] != "extractor" or len(parts) != 2:
            raise RecipeError([Issue(f"--set {item}", None, key, "milkit extract takes KEY=VALUE, "
                                     "extractor.KEY=VALUE or, for one of several encoders, NAME.KEY=VALUE")])
        for t in chosen:
            t[parts[1]] = value
    return tables, base


def register(app: typer.Typer) -> None:
    """Add ``extract`` to the app."""

    @app.command("extract")
    def extract(
        slides: Annotated[list[Path], typer.Argument(help="Slide files or folders of slides.")],
        out: Annotated[Path, typer.Option("--out", help=(
            "Output folder: <slide_id>.h5, report, segmentation/ (several encoders: <encoder>/<slide_id>.h5)."))],
        extractor: Annotated[str | None, typer.Option("--extractor", help=(
            "Encoder name (milkit encoders), or several: uni,conch-v1.5 (tiles read once; one subfolder of "
            "--out per encoder)."))] = None,
        sets: Annotated[list[str] | None, typer.Option("--set", help=(
            "KEY=VALUE (TOML value) for every encoder; NAME.KEY=VALUE for encoder NAME only."))] = None,
        recipe: Annotated[Path | None, typer.Option("--recipe", help="Use the extractor table of this recipe.")] = None,
        shard: Annotated[str | None, typer.Option("--shard", help="i/n: process every n-th slide from i.")] = None,
        mpp_csv: Annotated[Path | None, typer.Option(
            "--mpp-csv", help="CSV of slide_id (or slide file name),mpp: level-0 um/px per slide.")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = True,
    ) -> None:
        """Extract patch features for SLIDES into --out; exit 1 if any slide failed (see the report)."""
        from rich.console import Console

        from milkit.extract.build import build_extraction
        from milkit.extract.mpp_table import read_mpp_table, unknown_slides
        from milkit.extract.pipeline import extract_slides, extract_slides_multi
        from milkit.plugins import get_plugin_manager
        from milkit.registry import build_registries
        from milkit.slides import slide_id_from_path

        from milkit import cli_options as options

        from milkit.threads import govern

        out = options.out_dir(out)
        device = options.device(device)
        govern()  # MILKIT_THREADS, else one per core other processes leave free
        tables, base = extractor_tables(recipe, extractor, sets or [])
        source = str(recipe) if recipe is not None else "command line"
        registries = build_registries(get_plugin_manager())
        built = [build_extraction(t, registries, base_dir=base, source=source) for t in tables]
        settings = built[0][1]
        paths = expand_slides(slides)
        slide_mpp = read_mpp_table(mpp_csv) if mpp_csv is not None else None
        if slide_mpp:
            typo = unknown_slides(slide_mpp, (slide_id_from_path(p) for p in paths))
            if typo:
                raise DataError(f"{mpp_csv}: {len(typo)} slide id(s) match no slide given: {', '.join(typo[:5])}; "
                                "ids are file names without their extension")
        run = dict(settings=settings, shard=parse_shard(shard), device=device, progress=progress, slide_mpp=slide_mpp)
        if len(built) == 1:
            summaries = {"": extract_slides(paths, out, extractor=built[0][0], **run)}
        else:
            summaries = extract_slides_multi(paths, out, extractors=[e for e, _ in built], **run)
        console = Console()
        failed = False
        for name, summary in summaries.items():
            console.print(_outcome_table(summary, out / name if name else out))
            console.print(f"{name + ': ' if name else ''}{len(summary.done)} done, {len(summary.skipped)} skipped, "
                          f"{len(summary.failed)} failed")
            failed = failed or bool(summary.failed)
        if failed:
            raise typer.Exit(1)


def _outcome_table(summary: ExtractionSummary, out: Path) -> Table:
    from rich.markup import escape
    from rich.table import Table

    view = Table(title=escape(f"milkit extract -> {out}"), caption=escape(f"report: {summary.report_path}"))
    for col in ("slide", "status", "tiles", "s", "reason"):
        view.add_column(col, overflow="fold")
    style = {"done": "green", "skipped": "dim", "failed": "red"}
    for o in summary.outcomes:
        view.add_row(escape(o.slide_id), f"[{style[o.status]}]{o.status}[/]", str(o.n_tiles), f"{o.seconds:.1f}",
                     escape(o.reason))
    return view
