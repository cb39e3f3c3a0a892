"""recipe_changes: what differs between a recipe and a run dir's recipe.toml, key by key."""

from milkit.recipe import load_recipe, validate_recipe
from milkit.recipe.diff import recipe_changes

RECIPE = '[cohort]\ncsv = "{csv}"\n[aggregator]\nname = "abmil"\nembed_dim = {dim}\n[head]\nname = "classification"\n'


def _resolved(tmp_path, registries, csv, dim):
    path = tmp_path / f"r{dim}.toml"
    path.write_text(RECIPE.format(csv=csv, dim=dim))
    return validate_recipe(load_recipe(path), registries)


def test_no_run_dir_no_change_and_one_change(tmp_path, registries, synthetic_cohort):
    import tomli_w

    a, b = _resolved(tmp_path, registries, synthetic_cohort, 16), _resolved(tmp_path, registries, synthetic_cohort, 8)
    assert recipe_changes(tmp_path / "nowhere", a) == []
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.toml").write_text(tomli_w.dumps(a.to_dict()))
    assert recipe_changes(run, a) == []
    assert recipe_changes(run, b) == ["[aggregator] embed_dim: 16 -> 8"]
    (run / "recipe.toml").write_text("[broken")
    assert "unreadable" in recipe_changes(run, a)[0]


def test_resuming_may_add_trackers_but_not_change_the_model(tmp_path, registries, synthetic_cohort):
    import pytest
    import tomli_w

    from milkit.errors import UsageError
    from milkit.recipe.diff import check_resumable

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.toml").write_text(tomli_w.dumps(_resolved(tmp_path, registries, synthetic_cohort, 16).to_dict()))
    path = tmp_path / "tracked.toml"
    path.write_text('[run]\nloggers = ["mlflow"]\nmlflow_tracking_uri = "sqlite:///m.db"\n'
                    + RECIPE.format(csv=synthetic_cohort, dim=16))
    tracked = validate_recipe(load_recipe(path), registries, check_files=False)  # mlflow need not be installed
    assert recipe_changes(run, tracked) == ["[run] loggers: [] -> ['mlflow']",
                                            "[run] mlflow_tracking_uri: '(unset)' -> 'sqlite:///m.db'"]
    check_resumable(run, tracked)  # trackers only mirror the run dir
    with pytest.raises(UsageError, match="embed_dim"):
        check_resumable(run, _resolved(tmp_path, registries, synthetic_cohort, 8))
