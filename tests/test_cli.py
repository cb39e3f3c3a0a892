"""The CLI's commands all arrive through ``milkit_register_commands``; a plugin's join them."""

import types

import pytest
import typer
from typer.testing import CliRunner

from milkit import hookimpl
from milkit.cli import make_app, register_commands
from milkit.plugins import get_plugin_manager


def _names(app) -> list[str]:
    return [c.name for c in app.registered_commands]


def _plugin(**hooks) -> types.ModuleType:
    module = types.ModuleType("cli_test_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


@pytest.mark.histgen
def test_milkit_commands_come_first_then_the_bundled_plugins():
    names = _names(make_app(get_plugin_manager(autoload=False)))
    assert names[:3] == ["run", "validate", "plugins"]
    assert {"compare", "extract", "generate", "heatmap", "eval-reports", "demo", "import-histgen"} <= set(names)


def test_a_plugin_command_is_added_and_runs(capsys):
    def milkit_register_commands(app):
        @app.command("hello")
        def hello(name: str = "world") -> None:
            """Say hello."""
            print(f"hello {name}")

    pm = get_plugin_manager(autoload=False)
    pm.register(_plugin(milkit_register_commands=milkit_register_commands), name="hello-plugin")
    app = make_app(pm)
    result = CliRunner().invoke(app, ["hello", "--name", "milkit"])
    assert result.exit_code == 0 and result.output == "hello milkit\n"


def test_a_taken_name_is_refused_and_milkits_command_kept():
    def milkit_register_commands(app):
        @app.command("run")
        def run() -> None:
            print("hijacked")

        @app.command("fresh")
        def fresh() -> None: ...

    pm = get_plugin_manager(autoload=False)
    pm.register(_plugin(milkit_register_commands=milkit_register_commands), name="hijack")

    app = typer.Typer()
    problems = register_commands(pm, app)
    assert _names(app).count("run") == 1 and "fresh" in _names(app)
    assert len(problems) == 1 and "'hijack'" in problems[0] and "run" in problems[0]
    run = next(c for c in app.registered_commands if c.name == "run")
    assert run.callback.__module__ == "milkit.commands.run"


def test_a_hook_that_raises_is_reported_and_the_rest_still_work():
    def milkit_register_commands(app):
        @app.command("half")
        def half() -> None: ...

        raise RuntimeError("boom")

    pm = get_plugin_manager(autoload=False)
    pm.register(_plugin(milkit_register_commands=milkit_register_commands), name="broken")

    app = typer.Typer()
    problems = register_commands(pm, app)
    assert "half" not in _names(app) and "run" in _names(app)
    assert problems == [p for p in problems if "'broken'" in p and "RuntimeError: boom" in p] and len(problems) == 1


@pytest.mark.parametrize("name", ["milkit.histgen", "milkit.histgen.plugin"])
def test_disabling_the_histgen_plugin_removes_its_command(monkeypatch, name):
    monkeypatch.setenv("MILKIT_DISABLE_PLUGINS", name)
    names = _names(make_app(get_plugin_manager(autoload=False)))
    assert "import-histgen" not in names and "run" in names and "demo" in names
