"""``milkit plugins [--json] [--check]``: every registered component, who provides it, and whether it conforms."""

import json
from typing import Annotated, Any

import typer

from milkit.registry import Registries
from milkit.testing.report import CheckReport

KINDS = ("extractor", "aggregator", "head", "cohort_format")
CHECKED = ("extractor", "aggregator", "head")
"""The kinds the conformance kit checks (a cohort format has no tensors to check)."""


def component_rows(regs: Registries) -> list[dict[str, str]]:
    """One ``{kind, name, plugin, distribution, version}`` dict per registered component."""
    rows = []
    for kind in KINDS:
        registry = regs.of(kind)
        for name in registry.names():
            p = registry.provider(name)
            rows.append(
                {"kind": kind, "name": name, "plugin": p.plugin, "distribution": p.distribution, "version": p.version}
            )
    return rows


def check_component(regs: Registries, kind: str, name: str) -> CheckReport:
    """Run the conformance kit (default config) on one registered component."""
    from milkit.testing import run_aggregator_checks, run_extractor_checks, run_head_checks

    runner = {"extractor": run_extractor_checks, "aggregator": run_aggregator_checks, "head": run_head_checks}[kind]
    return runner(regs.of(kind).get(name))  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add ``plugins`` to the app."""

    @app.command("plugins")
    def plugins(
        as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object: components and problems.")] = False,
        check: Annotated[
            bool, typer.Option("--check", help="Run the conformance kit on every component; exit 1 if any check fails.")
        ] = False,
    ) -> None:
        """List every registered component: kind, name, plugin, distribution, version.

        Plugins that failed to load are reported as warnings (with the fix) and never hide the rest.
        """
        from milkit.plugins import get_plugin_manager
        from milkit.registry import build_registries

        regs = build_registries(get_plugin_manager())
        for problem in regs.problems:
            typer.echo(f"warning: {problem}", err=True)
        rows = component_rows(regs)
        reports = {(r["kind"], r["name"]): check_component(regs, r["kind"], r["name"])
                   for r in rows if r["kind"] in CHECKED} if check else {}
        if as_json:
            typer.echo(json.dumps(_as_json(rows, reports, regs.problems), indent=2))
        else:
            _print_tables(rows, reports)
        if any(rep.failures for rep in reports.values()):
            raise typer.Exit(1)


def _as_json(
    rows: list[dict[str, str]], reports: dict[tuple[str, str], CheckReport], problems: list[str]
) -> dict[str, Any]:
    components: list[dict[str, Any]] = []
    for row in rows:
        item: dict[str, Any] = dict(row)
        report = reports.get((row["kind"], row["name"]))
        if report is not None:
            item["checks"] = {r.check: r.status for r in report.results}
            item["failures"] = [str(r) for r in report.failures]
        components.append(item)
    return {"components": components, "problems": list(problems)}


def _print_tables(rows: list[dict[str, str]], reports: dict[tuple[str, str], CheckReport]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title="milkit components")
    for column in ("kind", "name", "plugin", "distribution", "version"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row.values()))
    console.print(table)
    if not reports:
        return
    marks = {"pass": "[green]ok[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]"}
    for kind in KINDS:
        kind_reports = {name: rep for (k, name), rep in reports.items() if k == kind}
        if not kind_reports:
            continue
        checks = [r.check for r in next(iter(kind_reports.values())).results]
        grid = Table("check", *kind_reports, title=f"{kind} conformance checks")  # one column per component
        for check in checks:
            grid.add_row(check, *(marks[rep.status(check) or "skip"] for rep in kind_reports.values()))
        console.print(grid)
    for (kind, name), rep in reports.items():
        for result in rep.failures:
            console.print(f"[red]FAIL[/] {kind} '{name}': {escape(str(result))}", highlight=False)
        if rep.not_run:
            console.print(f"[yellow]not checked[/] {kind} '{name}': {escape(rep.not_run)}", highlight=False)
