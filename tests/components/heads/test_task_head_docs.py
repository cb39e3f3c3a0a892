"""docs/recipes.md documents every key of the regression and multitarget heads, with their defaults."""

import re
import tomllib
from pathlib import Path

import pytest

from milkit.components.heads.multitarget import MultiTargetConfig
from milkit.components.heads.regression import RegressionConfig

RECIPES_MD = Path(__file__).resolve().parents[3] / "docs" / "recipes.md"


def head_table(name: str) -> dict[str, str]:
    """key -> default cell of the table that follows ``[head] name = "<name>"`` in docs/recipes.md."""
    lines = RECIPES_MD.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f'`[head] name = "{name}"`'))
    rows: dict[str, str] = {}
    for line in lines[start + 1:]:
        if not line.strip():
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] == "key" or set(cells[0]) <= set("-: "):
            continue
        rows[re.fullmatch(r"`([a-z_]+)`", cells[0]).group(1)] = cells[1]  # type: ignore[union-attr]
    return rows


@pytest.mark.parametrize(("name", "config"), [("regression", RegressionConfig), ("multitarget", MultiTargetConfig)])
def test_every_key_is_documented_with_its_default(name: str, config: type) -> None:
    rows = head_table(name)
    assert set(rows) == set(config.model_fields)
    for key, cell in rows.items():
        default = config.model_fields[key].default
        if cell == "–":
            assert default is None, key
        else:
            assert tomllib.loads(f"v = {cell}")["v"] == default, key
