"""``milkit demo``: writes the cohort where asked and prints its summary."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from milkit.demo.command import register, summarise
from milkit.demo import make_demo_cohort


@pytest.fixture
def cli():
    app = typer.Typer()
    app.callback()(lambda: None)  # keep "demo" a sub-command
    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["demo", *map(str, args)])


def test_demo_command_writes_cohort(cli, tmp_path: Path) -> None:
    result = cli("--out", tmp_path, "--slides", 3, "--seed", 2, "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cohort.csv").is_file() and len(list((tmp_path / "slides").glob("*.tiff"))) == 3
    assert "3 (3 cases)" in result.output and "squamous: 1" in result.output
    assert f"cohort:       {tmp_path / 'cohort.csv'}" in result.output


def test_non_default_demo_needs_out(cli) -> None:
    result = cli("--slides", 5)
    assert result.exit_code != 0 and "--out" in str(result.exception)


def test_summarise_counts_events_per_case(tmp_path: Path) -> None:
    path = make_demo_cohort(tmp_path, n_slides=12, slide_size=256, workers=1, progress=False)
    info = summarise(path)
    assert (info.slides, info.cases) == (12, 10)
    assert info.classes == {"adenocarcinoma": 4, "small_cell": 4, "squamous": 4}
    assert info.events == 7  # 30% of 10 cases censored
