"""The ``milkit`` command line: a thin typer app; each command lives in ``milkit/commands/``."""

import importlib
import sys

import typer

COMMAND_MODULES = (
    "milkit.commands.run",
    "milkit.commands.validate",
    "milkit.commands.plugins",
    "milkit.commands.new_plugin",
    "milkit.commands.demo",
    "milkit.commands.generate",
    "milkit.commands.compare",
    "milkit.commands.eval_reports",
    "milkit.commands.heatmap",
    "milkit.commands.import_histgen",
    "milkit.commands.extract",
)

app = typer.Typer(
    name="milkit",
    help="Multiple-instance learning for computational pathology: slides -> features -> trained models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console-script entry point: known milkit errors print as one message, exit code 1 or 2."""
    from milkit.errors import MilkitError, RecipeError

    try:
        app()
    except RecipeError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    except MilkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
