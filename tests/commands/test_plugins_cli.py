"""``milkit plugins``: the component table, --json, load problems as warnings, and --check's exit code."""

import itertools
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from milkit import __version__
from milkit.commands import plugins

_counter = itertools.count()
ONLY_FAKE = ("milkit.components.extractors,milkit.components.aggregators,milkit.components.heads,milkit.histgen,"
             "milkit.data.csv_format,milkit.demo,dsmil")
FAKE_SOURCE = """
import torch
from milkit import hookimpl
from milkit.components.aggregators.mean_pool import MeanPool

class Good(MeanPool):
    name = "good_pool"

class Leaky(MeanPool):
    name = "leaky_pool"

    def forward(self, feats, mask, coords):
        return super().forward(feats, torch.ones_like(mask), coords)

@hookimpl
def milkit_register_aggregators():
    return [Good, Leaky]
"""


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    plugins.register(app)

    @app.command("noop")  # a second command keeps `plugins` a sub-command
    def noop() -> None: ...

    return app


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str, str], None]]:
    """A fake installed distribution (dist-info + module on sys.path) for this test only."""
    modules: list[str] = []
    for var in ("MILKIT_DISABLE_PLUGINS", "MILKIT_DISABLE_PLUGIN_AUTOLOAD", "MILKIT_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)

    def make(dist: str, entry_point: str, source: str) -> None:
        module = f"milkit_cli_fake_{next(_counter)}"
        site = tmp_path / module
        info = site / f"{dist.replace('-', '_')}-0.3.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.1\n")
        (info / "entry_points.txt").write_text(f"[milkit]\n{entry_point} = {module}\n")
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(site))
        modules.append(module)

    yield make
    for module in modules:
        sys.modules.pop(module, None)


def test_table_lists_builtins_with_distribution_and_version(app: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = CliRunner().invoke(app, ["plugins"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if " abmil " in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == [
        "aggregator", "abmil", "milkit.components.aggregators", "milkit", __version__,
    ]


def test_json_lists_every_component_and_load_problems(app: typer.Typer, fake_dist: Callable[[str, str, str], None]) -> None:
    fake_dist("milkit-fake", "fake", FAKE_SOURCE)
    fake_dist("milkit-broken", "broken", "raise ImportError('needs openslide 9')")
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"kind": "aggregator", "name": "good_pool", "plugin": "fake", "distribution": "milkit-fake",
            "version": "0.3.1"} in data["components"]
    assert {"aggregator", "head", "cohort_format"} <= {c["kind"] for c in data["components"]}
    assert {"kind": "cohort_format", "name": "csv", "plugin": "milkit.data.csv_format", "distribution": "milkit",
            "version": __version__} in data["components"]
    problem = next(p for p in data["problems"] if "'broken'" in p)
    assert "(distribution milkit-broken 0.3.1) failed to load: ImportError: needs openslide 9" in problem
    assert f"warning: {problem}" in result.stderr


def test_check_prints_a_table_and_the_failures_and_exits_1(
    app: typer.Typer, fake_dist: Callable[[str, str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("milkit-fake", "fake", FAKE_SOURCE)
    monkeypatch.setenv("MILKIT_DISABLE_PLUGINS", ONLY_FAKE)
    result = CliRunner().invoke(app, ["plugins", "--check"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "aggregator conformance checks" in out
    padding = next(line for line in out.splitlines() if "padding invariance" in line and "│" in line)
    assert [c.strip() for c in padding.strip("│ ").split("│")] == ["padding invariance", "ok", "FAIL"]
    assert "FAIL aggregator 'leaky_pool': padding invariance: embedding changed by max |Δ| = " in out
    assert "(atol 1e-05) when 3 padded patches were appended" in out


def test_check_as_json_reports_each_check(
    app: typer.Typer, fake_dist: Callable[[str, str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("milkit-fake", "fake", FAKE_SOURCE)
    monkeypatch.setenv("MILKIT_DISABLE_PLUGINS", ONLY_FAKE)
    result = CliRunner().invoke(app, ["plugins", "--check", "--json"])
    assert result.exit_code == 1
    by_name = {c["name"]: c for c in json.loads(result.stdout)["components"]}
    assert set(by_name) == {"good_pool", "leaky_pool"}
    assert set(by_name["good_pool"]["checks"].values()) == {"pass"} and by_name["good_pool"]["failures"] == []
    assert by_name["leaky_pool"]["checks"]["padding invariance"] == "fail"
    assert by_name["leaky_pool"]["failures"][0].startswith("padding invariance: embedding changed by max |Δ|")


def test_check_exits_0_when_everything_passes(
    app: typer.Typer, fake_dist: Callable[[str, str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("milkit-fake", "fake", FAKE_SOURCE.replace("return [Good, Leaky]", "return [Good]"))
    monkeypatch.setenv("MILKIT_DISABLE_PLUGINS", ONLY_FAKE)
    assert CliRunner().invoke(app, ["plugins", "--check"]).exit_code == 0
