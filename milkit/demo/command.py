"""``milkit demo``: write the built-in synthetic cohort (slides, cohort.csv, composition.csv)."""

import csv
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer


@dataclass(frozen=True)
class DemoSummary:
    """Counts shown after generation; events are counted per case (survival is per patient)."""

    slides: int
    cases: int
    classes: dict[str, int]
    events: int


def summarise(cohort_csv: Path) -> DemoSummary:
    """Summarise a demo ``cohort.csv``."""
    with open(cohort_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    per_case = {r["case_id"]: r for r in rows}
    return DemoSummary(
        slides=len(rows),
        cases=len(per_case),
        classes=dict(sorted(Counter(r["label"] for r in rows).items())),
        events=sum(int(r["event"]) for r in per_case.values()),
    )


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the app."""

    @app.command("demo")
    def demo(
        out: Annotated[
            Path | None, typer.Option("--out", help="Folder to write into (default: the shared demo cache).")
        ] = None,
        slides: Annotated[int, typer.Option("--slides", min=1, help="Number of slides.")] = 60,
        seed: Annotated[int, typer.Option("--seed", help="Cohort seed; the same seed gives identical files.")] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    ) -> None:
        """Generate the synthetic demo cohort: pyramidal TIFF slides of three lung-cancer subtypes,
        with labels, survival times and templated pathology reports (no download needed)."""
        from rich.console import Console
        from rich.table import Table

        from milkit.demo import demo_cohort, make_demo_cohort
        from milkit.errors import MilkitError

        from milkit import cli_options

        if out is not None:
            out = cli_options.out_dir(out)
        start = time.perf_counter()
        if out is None:
            if (slides, seed) != (60, 0):
                raise MilkitError(
                    "the shared demo cache holds only the default demo (60 slides, seed 0); "
                    "pass --out DIR together with --slides/--seed"
                )
            path = demo_cohort(progress=not quiet)
        else:
            path = make_demo_cohort(out, n_slides=slides, seed=seed, progress=not quiet)
        seconds = time.perf_counter() - start
        info = summarise(path)
        size = sum(p.stat().st_size for p in path.parent.rglob("*") if p.is_file())
        table = Table(title="milkit demo cohort", show_header=False)
        table.add_row("slides", f"{info.slides} ({info.cases} cases)")
        table.add_row("classes", ", ".join(f"{k}: {v}" for k, v in info.classes.items()))
        table.add_row("events", f"{info.events} of {info.cases} cases (rest censored)")
        table.add_row("size", f"{size / 1e6:.1f} MB, {seconds:.1f} s")
        Console().print(table)
        typer.echo(f"cohort:       {path}")
        typer.echo(f"ground truth: {path.parent / 'composition.csv'}")
        typer.echo(f"slides:       {path.parent / 'slides'}")
