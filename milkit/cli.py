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
        help="Multiple-instance learning for computational pathology: slides -> features -> trained models. "
             "Add --debug anywhere (or set MILKIT_DEBUG=1) to see the traceback of an error.",
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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every error is one message naming its input, no traceback.

    Exit codes: 0 done; 1 a data, file or internal error; 2 a usage or recipe error; 130
    interrupted. ``--debug`` (anywhere on the line) or ``MILKIT_DEBUG=1`` shows the traceback.
    """
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MILKIT_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        make_app()(args=args, prog_name="milkit")
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place exceptions become messages
        if debug:
            raise
        message, code = explain(exc)
        typer.echo(message, err=True)
        sys.exit(code)


def explain(exc: BaseException) -> tuple[str, int]:
    """The one-line (or per-issue) message and the exit code for an exception that reached the CLI."""
    from milkit.errors import MilkitError, RecipeError, UsageError

    if isinstance(exc, RecipeError):
        return str(exc), 2
    if isinstance(exc, UsageError):
        return f"error: {exc}", 2
    if isinstance(exc, MilkitError):
        return f"error: {exc}", 1
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; finished work is kept (`milkit run --resume`, `milkit extract` and `milkit compare` " \
               "continue where they stopped)", 130
    if isinstance(exc, OSError) and exc.filename is not None:
        what = {PermissionError: "permission denied", IsADirectoryError: "is a folder, expected a file",
                NotADirectoryError: "a part of the path is a file, expected a folder",
                FileExistsError: "already exists", FileNotFoundError: "no such file or folder"}
        reason = next((text for cls, text in what.items() if isinstance(exc, cls)), exc.strerror or str(exc))
        return f"error: {exc.filename}: {reason}; check the path and its permissions", 1
    if isinstance(exc, MemoryError):
        return "error: out of memory; use smaller bags ([train] max_patches), a smaller batch_size, or " \
               "[cohort] cache_mb to bound the feature cache", 1
    return (f"error: internal error: {type(exc).__name__}: {exc}. This is a bug in milkit or a plugin; "
            "rerun with --debug (or MILKIT_DEBUG=1) for the traceback and report it"), 1
