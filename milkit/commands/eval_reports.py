"""``milkit eval-reports``: BLEU/METEOR/ROUGE-L/CIDEr of generated vs reference reports in any CSV."""

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from milkit.errors import DataError


class Clean(str, Enum):
    """How report strings are prepared before scoring."""

    none = "none"
    histgen = "histgen"


CLEAN_HELP = (
    "'none': score the strings as they are (HistGen scores decoded text); "
    "'histgen': HistGen's report cleaner, then a single-space re-join, on both columns."
)


def load_report_pairs(path: Path, pred_col: str, ref_col: str) -> tuple[list[str], list[str]]:
    """Two text columns of a CSV; every cell is a string (empty cells stay ``""``, "NA" stays "NA")."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in (pred_col, ref_col) if c not in table.columns]
    if missing:
        present = ", ".join(repr(c) for c in table.columns)
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))}; columns present: {present}")
    if table.empty:
        raise DataError(f"{path}: has a header but no rows to score")
    return table[pred_col].tolist(), table[ref_col].tolist()


def register(app: typer.Typer) -> None:
    """Add ``eval-reports`` to the app."""

    @app.command("eval-reports")
    def eval_reports(
        csv: Annotated[Path, typer.Argument(help="CSV with one generated and one reference report per row.")],
        pred_col: Annotated[str, typer.Option("--pred-col", help="Column of generated reports.")],
        ref_col: Annotated[str, typer.Option("--ref-col", help="Column of reference reports.")],
        clean: Annotated[Clean, typer.Option(help=CLEAN_HELP)] = Clean.none,
        meteor: Annotated[bool, typer.Option("--meteor/--no-meteor", help="Run METEOR (needs Java).")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
        out: Annotated[Path | None, typer.Option(help="Also write the JSON result to this file.")] = None,
    ) -> None:
        """Score generated reports against references with pycocoevalcap (no PTB tokenisation)."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from milkit.metrics.reports import METRIC_KEYS, REASON_KEY, score_reports

        if out is not None:
            from milkit import cli_options as options

            options.out_file(out)
        generated, references = load_report_pairs(csv, pred_col, ref_col)
        if clean is Clean.histgen:
            from milkit.metrics.report_text import clean_report

            # As HistGen scores it: cleaned, split, re-joined by decode() with single spaces.
            generated = [" ".join(clean_report(t).split()) for t in generated]
            references = [" ".join(clean_report(t).split()) for t in references]
        with Console(stderr=True).status("scoring reports (METEOR starts a JVM)...", spinner="dots"):
            scores = score_reports(generated, references, meteor=meteor)
        result = {"csv": str(csv), "pred_col": pred_col, "ref_col": ref_col, "clean": clean.value,
                  "n": len(generated), "scores": scores}
        if out is not None:
            out.write_text(json.dumps(result, indent=2) + "\n")
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        table = Table(title=escape(csv.name), caption=f"{len(generated)} reports, clean={clean.value}")
        table.add_column("metric")
        table.add_column("score", justify="right")
        for key in METRIC_KEYS:
            table.add_row(key, "n/a" if scores[key] is None else f"{scores[key]:.4f}")
        console = Console()
        console.print(table)
        if REASON_KEY in scores:
            console.print(escape(f"METEOR n/a: {scores[REASON_KEY]}"))
