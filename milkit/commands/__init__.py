"""milkit's own CLI commands, one module each, added through the ``milkit_register_commands`` hook
like any plugin's (HistGen's and the demo's commands live in their plugins)."""

import importlib

import typer

from milkit.hookspecs import hookimpl

COMMAND_MODULES = (
    "milkit.commands.run",
    "milkit.commands.validate",
    "milkit.commands.plugins",
    "milkit.commands.new_plugin",
    "milkit.commands.generate",
    "milkit.commands.compare",
    "milkit.commands.eval_reports",
    "milkit.commands.heatmap",
    "milkit.commands.view",
    "milkit.commands.extract",
    "milkit.commands.convert_weights",
    "milkit.commands.encoders",
)


@hookimpl
def milkit_register_commands(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
