"""``milkit encoders [--json]``: every registered extractor with a model card (``Extractor.card``).

Name, output, parameters, patch size, native resolution, input size, licence (non-commercial ones
marked) and where the weights are published. Extractors are reached only through the registries.
"""

import json
import re
from dataclasses import asdict
from typing import Annotated, Any

import typer

from milkit.registry import Registries

COLUMNS = ("name", "dim", "params", "patch", "mpp", "input", "licence", "weights")


def output_dim(output: str) -> int | None:
    """The feature width a card's ``output`` names last, e.g. ``"class token + mean patch token (2560)"`` -> 2560."""
    found = re.findall(r"\((\d+)\)", output)
    return int(found[-1]) if found else None


def is_non_commercial(licence: str) -> bool:
    text = licence.lower()
    return "non-commercial" in text or "noncommercial" in text or "-nc" in text or "academic" in text


def encoder_rows(regs: Registries) -> list[dict[str, Any]]:
    """One dict per registered extractor that has a card: the card's fields plus ``name``,
    ``output_dim``, ``non_commercial`` and ``plugin``."""
    rows = []
    for name in regs.extractors.names():
        cls = regs.extractors.get(name)
        card = cls.card
        if card is None:
            continue
        rows.append({"name": name, **asdict(card), "output_dim": output_dim(card.output),
                     "non_commercial": is_non_commercial(card.licence), "plugin": regs.extractors.provider(name).plugin})
    return rows


def format_params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def register(app: typer.Typer) -> None:
    """Add ``encoders`` to the app."""

    @app.command("encoders")
    def encoders(
        as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per encoder.")] = False,
    ) -> None:
        """List the named patch encoders: output, parameters, patch, native mpp, input, licence, weights.

        Use one with ``[extractor] name = "<name>"`` and ``weights = "<local file>"`` (milkit never downloads).
        """
        from milkit.plugins import get_plugin_manager
        from milkit.registry import build_registries

        regs = build_registries(get_plugin_manager())
        for problem in regs.problems:
            typer.echo(f"warning: {problem}", err=True)
        rows = encoder_rows(regs)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        _print_table(rows)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="milkit encoders (weights come from a local file: weights = \"...\")")
    for column in COLUMNS:
        table.add_column(column, overflow="fold", justify="right" if column in ("dim", "params", "patch", "mpp", "input")
                         else "left")
    for r in rows:
        licence = escape(r["licence"])
        table.add_row(
            escape(r["name"]), str(r["output_dim"] or "?"), format_params(r["params"]),
            "-" if r["patch_px"] is None else str(r["patch_px"]), "-" if r["mpp"] is None else f"{r['mpp']:g}",
            str(r["input_px"]), f"[red]{licence}[/]" if r["non_commercial"] else licence, escape(r["weights"]))
    console = Console()
    console.print(table)
    console.print("dim: the feature width (the card's output; --json gives the full description)", highlight=False)
    if any(r["non_commercial"] for r in rows):
        console.print("[red]red[/]: non-commercial licence (check the model card's terms before use)", highlight=False)
