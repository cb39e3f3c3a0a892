"""Recipe validation: every problem reported at once, with file, line, key and the valid choices."""

from pathlib import Path

import pytest

from milkit.errors import RecipeError
from milkit.recipe import load_recipe, validate_recipe
from milkit.recipe.locate import locate

GOOD = """\
[run]
name = "t"

[cohort]
csv = "{csv}"

[aggregator]
name = "abmil"
embed_dim = 32

[head]
name = "classification"

[train]
epochs = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_valid_recipe_resolves_defaults(tmp_path, registries, synthetic_cohort):
    resolved = validate_recipe(load_recipe(write(tmp_path, GOOD.format(csv=synthetic_cohort))), registries)
    assert resolved.aggregator.config.embed_dim == 32
    assert resolved.aggregator.config.gated is True  # default filled in
    table = resolved.to_dict()
    assert table["aggregator"]["name"] == "abmil" and table["train"]["epochs"] == 2


def test_three_problems_reported_together_with_lines(tmp_path, registries, synthetic_cohort):
    text = GOOD.format(csv=synthetic_cohort).replace('name = "abmil"', 'name = "abmill"')
    text = text.replace("epochs = 2", "epochs = \"two\"\nbatchsize = 4")
    with pytest.raises(RecipeError) as err:
        validate_recipe(load_recipe(write(tmp_path, text)), registries)
    issues = err.value.issues
    lines = {i.key: (i.line, i.message) for i in issues}
    assert len(issues) == 3
    assert lines["[aggregator] name"][0] == 8 and "did you mean 'abmil'" in lines["[aggregator] name"][1]
    assert "available aggregators: abmil, " in lines["[aggregator] name"][1]
    assert lines["[train] epochs"][0] == 15 and "integer" in lines["[train] epochs"][1]
    assert lines["[train] batchsize"][0] == 16 and "did you mean 'batch_size'" in lines["[train] batchsize"][1]
    assert str(issues[0]).startswith(f"{tmp_path / 'r.toml'}:8: [aggregator] name: unknown aggregator 'abmill'")


def test_unknown_component_key_lists_valid_keys(tmp_path, registries, synthetic_cohort):
    text = GOOD.format(csv=synthetic_cohort).replace("embed_dim = 32", "atten_dim = 32")
    with pytest.raises(RecipeError) as err:
        validate_recipe(load_recipe(write(tmp_path, text)), registries)
    (issue,) = err.value.issues
    assert issue.line == 9
    assert "did you mean 'attn_dim'" in issue.message and "valid keys: attn_dim, dropout, embed_dim, gated" in issue.message


def test_missing_file_wired_dim_and_unknown_table(tmp_path, registries):
    text = GOOD.format(csv="nope.csv").replace("embed_dim = 32", "in_dim = 7") + "\n[optimiser]\nlr = 1\n"
    with pytest.raises(RecipeError) as err:
        validate_recipe(load_recipe(write(tmp_path, text)), registries)
    messages = " | ".join(str(i) for i in err.value.issues)
    assert "file not found" in messages and "set automatically from the data" in messages
    assert "unknown table" in messages and "valid tables: run, cohort" in messages


def test_override_errors_name_the_override(tmp_path, registries, synthetic_cohort):
    recipe = load_recipe(write(tmp_path, GOOD.format(csv=synthetic_cohort)), ["train.lr=-1"])
    with pytest.raises(RecipeError) as err:
        validate_recipe(recipe, registries)
    (issue,) = err.value.issues
    assert issue.file == "--set train.lr=-1" and "greater than 0" in issue.message


def test_override_applies_typed_value(tmp_path, registries, synthetic_cohort):
    recipe = load_recipe(write(tmp_path, GOOD.format(csv=synthetic_cohort)), ["aggregator.gated=false", "run.name=x"])
    resolved = validate_recipe(recipe, registries)
    assert resolved.aggregator.config.gated is False and resolved.run.name == "x"


def test_toml_syntax_error_has_line(tmp_path, registries):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "[run]\nname = \n"))
    assert err.value.issues[0].line == 2


def test_head_needing_tokens_rejects_tokenless_aggregator(tmp_path, registries, synthetic_cohort):
    if "report" not in registries.heads:
        pytest.skip("report head not registered")
    text = GOOD.format(csv=synthetic_cohort).replace('name = "classification"', 'name = "report"')
    with pytest.raises(RecipeError) as err:
        validate_recipe(load_recipe(write(tmp_path, text)), registries)
    assert any("needs a token sequence" in i.message for i in err.value.issues)


def test_locate_finds_keys_and_headers():
    text = "[a]\nx = 1\n\n[b]\nx = 2\ny.z = 3\n"
    assert locate(text, "a", "x") == 2 and locate(text, "b", "x") == 5
    assert locate(text, "b", "y.z") == 6 and locate(text, "b", "missing") == 4 and locate(text, "c") is None


RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", [
    pytest.param(p, id=p.stem, marks=[pytest.mark.histgen] if "histgen" in p.read_text() else [])
    for p in RECIPES if "tcga" not in p.name  # the TCGA recipe points at the HistGen release on the user's disk
])
def test_every_shipped_recipe_validates(registries, path):
    validate_recipe(load_recipe(path), registries, check_files=False)


def test_recipes_are_found():
    assert len(RECIPES) >= 5
