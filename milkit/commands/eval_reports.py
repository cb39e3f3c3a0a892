"""``milkit eval-reports``: every report metric (n-gram scores, finding agreement, REG2025) of generated vs
reference reports in any CSV."""

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from milkit.errors import DataError, UsageError


class Protocol(str, Enum):
    """Which text is scored, and what the reference column is taken to hold."""

    original = "original"
    histgen_protocol = "histgen_protocol"
    raw = "raw"


PROTOCOL_HELP = (
    "'original' (default): the reference column holds the original reports; HistGen's cleaner runs on both "
    "columns, so any model's text is scored against the whole cleaned report. "
    "'histgen_protocol': the reference column holds HistGen's decoded references (truncated vocabulary, "
    "<unk> included), e.g. a HistGen gen_vs_gt.csv; both columns are scored as given, as HistGen scores them. "
    "'raw': both columns as given, no claim about them (the REG2025 challenge scores raw text)."
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


def prepare(texts: list[str], protocol: Protocol) -> list[str]:
    """The strings scored under ``protocol``: HistGen-cleaned and single-space joined for 'original'."""
    if protocol is not Protocol.original:
        return texts
    from milkit.metrics.report_text import clean_report

    return [" ".join(clean_report(t).split()) for t in texts]


def _print_table(scores: dict[str, Any], title: str, caption: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from milkit.metrics.reg2025 import WEIGHTS
    from milkit.metrics.reports import METRIC_KEYS

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    table = Table(title=escape(title), caption=escape(caption))
    table.add_column("metric")
    table.add_column("score", justify="right")
    keys = [*METRIC_KEYS, "REG2025", *(f"REG2025_{p}" for p in WEIGHTS), "findings_accuracy", "findings_macro_f1"]
    for key in keys:
        if key in scores:
            table.add_row(key, fmt(scores[key]))
    console = Console()
    console.print(table)
    fields = [k.removeprefix("finding_").removesuffix("_accuracy") for k in scores
              if k.startswith("finding_") and k.endswith("_accuracy")]
    if fields:
        per_field = Table(title=escape(f"findings ({scores.get('findings_vocabulary')} vocabulary)"))
        for name, justify in (("field", "left"), ("accuracy", "right"), ("macro-F1", "right"), ("coverage", "right")):
            per_field.add_column(name, justify=justify)  # type: ignore[arg-type]
        for f in fields:
            per_field.add_row(f, fmt(scores[f"finding_{f}_accuracy"]), fmt(scores[f"finding_{f}_macro_f1"]),
                              fmt(scores[f"finding_{f}_coverage"]))
        console.print(per_field)
    for key, value in scores.items():
        if key.endswith("_reason"):
            console.print(escape(f"{key.removesuffix('_reason').replace('_', ' ')}: {value}"))


def register(app: typer.Typer) -> None:
    """Add ``eval-reports`` to the app."""

    @app.command("eval-reports")
    def eval_reports(
        csv: Annotated[Path, typer.Argument(help="CSV with one generated and one reference report per row.")],
        pred_col: Annotated[str, typer.Option("--pred-col", help="Column of generated reports.")],
        ref_col: Annotated[str, typer.Option("--ref-col", help="Column of reference reports.")],
        protocol: Annotated[Protocol, typer.Option(help=PROTOCOL_HELP)] = Protocol.original,
        meteor: Annotated[bool, typer.Option("--meteor/--no-meteor", help="Run METEOR (needs Java).")] = True,
        findings: Annotated[str, typer.Option(
            help="Finding-agreement vocabulary: 'demo', 'tcga', a TOML path, or 'none'.")] = "tcga",
        reg2025: Annotated[bool, typer.Option("--reg2025/--no-reg2025", help="Compute the REG2025 score.")] = True,
        keyword_model: Annotated[str, typer.Option(
            help="spaCy/scispaCy model for REG2025's KEY (installed package or folder; 'none': off).")
        ] = "en_core_sci_lg",
        embedding_model: Annotated[str, typer.Option(
            help="transformers model for REG2025's EMB (folder, or hub id in the local HF cache; 'none': off).")
        ] = "dmis-lab/biobert-v1.1",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")] = False,
        out: Annotated[Path | None, typer.Option(help="Also write the JSON result to this file.")] = None,
    ) -> None:
        """Score generated reports against references: BLEU/METEOR/ROUGE-L/CIDEr (pycocoevalcap, no PTB
        tokenisation), finding agreement and the REG2025 ranking score."""
        import pydantic
        from rich.console import Console

        from milkit.metrics.reports import ReportMetricsConfig, report_metric_problems, report_metrics

        if out is not None:
            from milkit import cli_options as options

            options.out_file(out)
        try:
            config = ReportMetricsConfig(findings_vocabulary=findings, reg2025_keyword_model=keyword_model,
                                         reg2025_embedding_model=embedding_model)
        except pydantic.ValidationError as exc:
            raise UsageError("--findings", exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        problems = report_metric_problems(config)
        if problems:
            raise UsageError("--findings", problems[0].removeprefix("findings_vocabulary: "))
        generated, references = load_report_pairs(csv, pred_col, ref_col)
        generated, references = prepare(generated, protocol), prepare(references, protocol)
        with Console(stderr=True).status("scoring reports (METEOR starts a JVM, REG2025 loads its models)...",
                                         spinner="dots"):
            scores = report_metrics(generated, references, config, meteor=meteor, reg2025_score=reg2025)
        result = {"csv": str(csv), "pred_col": pred_col, "ref_col": ref_col, "protocol": protocol.value,
                  "n": len(generated), "scores": scores}
        if out is not None:
            out.write_text(json.dumps(result, indent=2) + "\n")
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        _print_table(scores, csv.name, f"{len(generated)} reports, protocol={protocol.value}")
