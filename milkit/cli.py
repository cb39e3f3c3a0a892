"""The ``milkit`` command line: a typer app whose commands all arrive through the
``milkit_register_commands`` hook (milkit's own from ``milkit.commands``, plugins' beside them)."""

import sys
from typing import Any

import pluggy
import typer


def make_app(pm: pluggy.PluginManager | None = None) -> typer.Typer:
    """A fresh app with every plugin's commands (``pm``: default, a fresh plugin manager).

    A plugin whose hook raises, or that takes a command name already taken, is reported on
    stderr and skipped; every other command still works.
    """
    from milkit.plugins import get_plugin_manager

    app = typer.Typer(
        name="milkit",
        help="Multiple-instance learning for computational pathology: slides -> features -> trained models.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    pm = pm or get_plugin_manager()
    for problem in register_commands(pm, app):
        typer.echo(f"warning: {problem}", err=True)
    return app


def register_commands(pm: pluggy.PluginManager, app: typer.Typer) -> list[str]:
    """Call each plugin's ``milkit_register_commands`` on ``app``; return the problems met."""
    from milkit.plugins import describe_plugin, in_call_order

    problems: list[str] = []
    hook = pm.hook.milkit_register_commands
    for impl in in_call_order(hook.get_hookimpls()):  # milkit's own commands first
        provider = describe_plugin(pm, impl.plugin_name)
        before = list(app.registered_commands)
        others = [p for _, p in pm.list_name_plugin() if p is not impl.plugin and p is not None]
        try:  # through the manager, so MILKIT_TRACE_PLUGINS sees the call
            pm.subset_hook_caller(hook.name, remove_plugins=others)(app=app)
        except Exception as exc:  # a broken plugin must not take the CLI down
            app.registered_commands[:] = before
            problems.append(f"plugin {provider}: milkit_register_commands raised {type(exc).__name__}: {exc}; "
                            f"fix it or disable it with MILKIT_DISABLE_PLUGINS={provider.plugin}")
            continue
        taken = {_command_name(c) for c in before}
        added = app.registered_commands[len(before):]
        clashes = [c for c in added if _command_name(c) in taken]
        if clashes:
            names = ", ".join(sorted(_command_name(c) for c in clashes))
            problems.append(f"plugin {provider} adds command(s) {names}, which another plugin already provides; "
                            f"its version was ignored. Rename it, or disable one with MILKIT_DISABLE_PLUGINS")
            app.registered_commands[:] = before + [c for c in added if c not in clashes]
    return problems


def _command_name(info: Any) -> str:
    """The CLI name typer gives a registered command (its ``name``, else the function's, dashed)."""
    return info.name or info.callback.__name__.replace("_", "-")


def __getattr__(name: str) -> Any:
    if name == "app":  # `from milkit.cli import app`: built on first use, with the plugins of that moment
        globals()["app"] = make_app()
        return globals()["app"]
    raise AttributeError(f"module 'milkit.cli' has no attribute {name!r}")


def main() -> None:
    """Console-script entry point: known milkit errors print as one message, exit code 1 or 2."""
    from milkit.errors import MilkitError, RecipeError

    try:
        make_app()()
    except RecipeError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    except MilkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
