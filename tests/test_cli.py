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


def _main(argv, capsys, monkeypatch, extra=None):
    """Run ``milkit.cli.main(argv)`` -> (exit code, stderr)."""
    from milkit import cli

    if extra is not None:
        real = cli.make_app
        monkeypatch.setattr(cli, "make_app", lambda pm=None: extra(real(pm)))
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code, capsys.readouterr().err


def test_an_output_folder_that_is_a_file_is_a_usage_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "taken").write_text("x")
    code, err = _main(["extract", str(tmp_path), "--out", str(tmp_path / "taken")], capsys, monkeypatch)
    assert code == 2 and "--out" in err and "is an existing file" in err and "Traceback" not in err


def test_an_unwritable_output_folder_is_a_usage_error(tmp_path, capsys, monkeypatch):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        code, err = _main(["demo", "--out", str(locked / "demo")], capsys, monkeypatch)
        assert code == 2 and "not writable" in err and "Traceback" not in err
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("argv", [["generate", "run", "--features", "f", "--batch-size", "0"],
                                  ["heatmap", "run", "--slide", "x", "--width", "0"],
                                  ["heatmap", "run", "--slide", "x", "--top-k", "-1"]])
def test_out_of_range_numbers_are_refused_not_replaced(argv, capsys, monkeypatch):
    code, err = _main(argv, capsys, monkeypatch)
    assert code == 2 and "Invalid value" in err and "Traceback" not in err


def test_cuda_on_a_machine_without_it_is_a_usage_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _main(["extract", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cuda"], capsys, monkeypatch)
    assert code == 2 and "--device" in err and "no usable CUDA device" in err


def _broken_command(app):
    @app.command("explode")
    def explode() -> None:
        {}["missing"]

    return app


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    code, err = _main(["explode"], capsys, monkeypatch, extra=_broken_command)
    assert code == 1 and err.count("\n") == 1 and "internal error: KeyError: 'missing'" in err and "--debug" in err
    with pytest.raises(KeyError):
        from milkit import cli

        cli.main(["explode", "--debug"])
    monkeypatch.setenv("MILKIT_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["explode"])


def test_os_errors_name_the_path():
    from milkit.cli import explain

    message, code = explain(PermissionError(13, "Permission denied", "/data/slides/a.svs"))
    assert code == 1 and message == ("error: /data/slides/a.svs: permission denied; check the path and its "
                                     "permissions")


def test_a_folder_no_one_can_create_is_one_message(capsys, monkeypatch):
    """/proc refuses new entries even for root: the error still names the path, with no traceback."""
    code, err = _main(["demo", "--out", "/proc/milkit-cannot-create/demo", "--slides", "2"], capsys, monkeypatch)
    assert code in (1, 2) and "/proc/milkit-cannot-create" in err and "Traceback" not in err
