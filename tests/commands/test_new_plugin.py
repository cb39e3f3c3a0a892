"""``milkit new-plugin``: the skeleton installs, registers through its entry point and passes its own tests."""

import importlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from milkit.commands import new_plugin
from milkit.commands.new_plugin import plugin_names, write_plugin
from milkit.errors import MilkitError
from milkit.testing import check_aggregator, check_extractor, check_head

CHECKS = {"aggregator": check_aggregator, "head": check_head, "extractor": check_extractor}


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Module names to drop from sys.modules after the test."""
    names: list[str] = []
    yield names
    for name in list(sys.modules):
        if any(name == n or name.startswith(n + ".") for n in names):
            del sys.modules[name]


def test_names_follow_the_dist_module_entry_point_convention() -> None:
    values = plugin_names("My-Pool", "aggregator")
    assert {k: values[k] for k in ("name", "module", "dist", "cls", "base")} == {
        "name": "my_pool", "module": "milkit_my_pool", "dist": "milkit-my-pool", "cls": "MyPool", "base": "Aggregator",
    }
    assert plugin_names("milkit-my-pool", "head")["dist"] == "milkit-my-pool"


@pytest.mark.parametrize("kind", ["aggregator", "head", "extractor"])
def test_generated_component_passes_the_kit(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, importable: list[str]
) -> None:
    name = f"gen_{kind}"
    files = write_plugin(name, kind, tmp_path / "out")
    root = tmp_path / "out"
    assert sorted(str(p.relative_to(root)) for p in files) == sorted([
        "pyproject.toml", "README.md", f"src/milkit_{name}/__init__.py", f"src/milkit_{name}/{name}.py",
        f"tests/test_{name}.py",
    ])
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"milkit-{name.replace('_', '-')}"
    assert meta["project"]["entry-points"]["milkit"] == {name: f"milkit_{name}"}
    assert f'[{kind}]\nname = "{name}"' in (root / "README.md").read_text()
    monkeypatch.syspath_prepend(str(root / "src"))
    importable.append(f"milkit_{name}")
    module = importlib.import_module(f"milkit_{name}")
    cls = getattr(module, f"Gen{kind.capitalize()}")
    assert getattr(module, f"milkit_register_{kind}s")() == [cls] and cls.name == name
    assert CHECKS[kind](cls).passed


def test_refuses_bad_names_and_non_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(MilkitError, match=r"invalid plugin name '9lives': use lowercase letters"):
        write_plugin("9lives", "aggregator", tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(MilkitError, match=r"b already exists and is not empty; choose another --out or remove it"):
        write_plugin("fine", "aggregator", tmp_path / "b")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["keep.txt"]


def test_command_writes_into_the_default_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    new_plugin.register(app)

    @app.command("noop")
    def noop() -> None: ...

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["new-plugin", "ordinal", "--kind", "head"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == ["wrote milkit-ordinal/", "  pyproject.toml"]
    assert (tmp_path / "milkit-ordinal" / "src" / "milkit_ordinal" / "ordinal.py").is_file()
    bad = CliRunner().invoke(app, ["new-plugin", "x", "--kind", "sampler"])
    assert bad.exit_code == 2 and "'sampler' is not one of" in bad.output


@pytest.mark.slow
def test_skeleton_installs_and_passes_its_own_tests(tmp_path: Path) -> None:
    """pip-installs the skeleton into a private target folder (not the shared venv) and runs its tests there."""
    root = tmp_path / "milkit-kit-smoke"
    write_plugin("kit_smoke", "aggregator", root)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run([*pip, str(root)], check=True, capture_output=True, timeout=120)
    assert (site / "milkit_kit_smoke" / "__init__.py").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MILKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    env.pop("MILKIT_DISABLE_PLUGINS", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
