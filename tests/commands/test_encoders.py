"""``milkit encoders``: the table of registered extractors that have a model card, and --json."""

import json

import pytest
import typer
from typer.testing import CliRunner

from milkit.commands import encoders
from milkit.extractor import EncoderCard


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("MILKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    app = typer.Typer()
    encoders.register(app)

    @app.command("noop")  # a second command keeps `encoders` a sub-command
    def noop() -> None: ...

    return app


def test_json_lists_every_card_from_the_registries(app: typer.Typer, registries) -> None:
    result = CliRunner().invoke(app, ["encoders", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    with_cards = {n for n in registries.extractors.names() if registries.extractors.get(n).card is not None}
    assert set(rows) == with_cards and {"uni", "virchow2", "h-optimus-0", "phikon-v2", "lunit-vit-s8"} <= set(rows)
    assert "vit" not in rows and "color-texture" not in rows                     # generic: no card
    uni = rows["uni"]
    assert (uni["output_dim"], uni["params"], uni["patch_px"], uni["input_px"], uni["mpp"]) == (
        1024, 303_350_784, 16, 224, 0.5)
    assert uni["non_commercial"] and "MahmoodLab/UNI" in uni["weights"] and uni["plugin"] == "milkit.components.extractors"
    assert rows["virchow2"]["output_dim"] == 2560 and not rows["h-optimus-0"]["non_commercial"]


def test_table_shows_dim_params_licence_and_weights(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["encoders"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "│ uni " in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[:6] == ["uni", "1024", "303.4M", "16", "0.5", "224"]
    assert "non-commercial" in cells[6] and "MahmoodLab/UNI" in cells[7]
    assert "non-commercial licence" in result.stdout


@pytest.mark.parametrize(("output", "dim"), [("class token (1024)", 1024), ("cls + mean (1280) ... (2560)", 2560),
                                              ("pooled", None)])
def test_output_dim_is_the_last_width_named(output: str, dim: int | None) -> None:
    assert encoders.output_dim(output) == dim


def test_non_commercial_detection() -> None:
    card = EncoderCard("m", 1, "x (1)", 224, 16, 0.5, "Apache-2.0", "w")
    assert not encoders.is_non_commercial(card.licence)
    assert encoders.is_non_commercial("CC-BY-NC-ND 4.0") and encoders.is_non_commercial("academic research only")
