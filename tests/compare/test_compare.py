"""milkit compare: same folds for every aggregator, the comparison files, reuse on re-run."""

import json

import numpy as np
import pytest

from milkit.compare.runner import run_compare
from milkit.compare.stats import mean_ci, paired_test
from milkit.errors import RecipeError
from milkit.recipe import load_recipe, validate_recipe

RECIPE = """\
[run]
name = "cmp"

[cohort]
csv = "{csv}"
val_fraction = 0.25

[aggregator]
name = "mean"

[head]
name = "classification"

[train]
epochs = 4
batch_size = 4
lr = 1e-2

[eval]
bootstrap = 50

[compare]
folds = 3
seeds = [0]
aggregators = [{{name = "mean", embed_dim = 16}}, {{name = "abmil", embed_dim = 16, attn_dim = 8}}]
"""


def test_compare_writes_table_and_reuses_runs(tmp_path, registries, synthetic_cohort):
    path = tmp_path / "c.toml"
    path.write_text(RECIPE.format(csv=synthetic_cohort))
    recipe = validate_recipe(load_recipe(path), registries)
    out = run_compare(recipe, registries, out=tmp_path / "cmp", progress=False)
    for name in ("comparison.csv", "comparison.json", "comparison.png", "splits.json"):
        assert (out / name).is_file()
    table = json.loads((out / "comparison.json").read_text())
    assert [r["aggregator"] for r in table["rows"]] == ["mean", "abmil"]
    assert all(r["n_runs"] == 3 for r in table["rows"])
    row = table["rows"][0]
    assert row["balanced_accuracy"]["ci95"][0] <= row["balanced_accuracy"]["mean"] <= row["balanced_accuracy"]["ci95"][1]
    assert row["n_parameters"] > 0 and row["peak_memory_mb"] > 0
    # the same patient-disjoint folds for both aggregators
    for fold in range(3):
        a = json.loads((out / "runs/mean/seed_0" / f"fold_{fold}" / "result.json").read_text())
        b = json.loads((out / "runs/abmil/seed_0" / f"fold_{fold}" / "result.json").read_text())
        assert [r["slide_id"] for r in a["records"]["test"]] == [r["slide_id"] for r in b["records"]["test"]]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed_0/fold_*/checkpoints/last.safetensors")}
    before = (out / "comparison.csv").read_text()
    run_compare(recipe, registries, out=tmp_path / "cmp", progress=False)
    assert (out / "comparison.csv").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no training happened


def test_unknown_aggregator_in_compare_lists_registered(tmp_path, registries, synthetic_cohort):
    path = tmp_path / "c.toml"
    path.write_text(RECIPE.format(csv=synthetic_cohort).replace('{name = "abmil"', '{name = "abmill"'))
    with pytest.raises(RecipeError) as err:
        validate_recipe(load_recipe(path), registries)
    (issue,) = err.value.issues
    assert "unknown aggregator 'abmill'; did you mean 'abmil'?" in issue.message and "available aggregators" in issue.message


def test_mean_ci_and_paired_tests():
    s = mean_ci([0.8, 0.9, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["ci95"][0] < 0.9 < s["ci95"][1]
    assert s["ci95"][1] - 0.9 == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    same = paired_test([0.8, 0.81, 0.79, 0.8, 0.82], [0.8, 0.8, 0.8, 0.81, 0.81])
    assert same["within_noise"]
    far = paired_test(list(np.linspace(0.9, 0.95, 12)), list(np.linspace(0.5, 0.55, 12)), method="bootstrap")
    assert not far["within_noise"] and far["ci95"][0] > 0.3
