"""milkit compare with the regression and multi-target heads: their metrics fill the table, and a
minimised primary metric (MAE) picks the lowest as best."""

import csv
import json
from pathlib import Path

from milkit.compare.runner import run_compare
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
{head}

[train]
epochs = 2
batch_size = 4
lr = 2e-2

[compare]
folds = 2
seeds = [0]
{metric}
aggregators = [{{name = "mean", embed_dim = 16}}, {{name = "abmil", embed_dim = 16, attn_dim = 8}}]
"""


def add_columns(csv_path: Path) -> None:
    """A continuous ``score`` and a second label ``high`` (every fifth cell empty) from the class signal."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        label = int(r["label"][-1])
        r["score"] = f"{1.5 * label + 0.1 * (i % 3):.2f}"
        r["high"] = "" if i % 5 == 0 else ("yes" if label == 2 else "no")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def compare(tmp_path: Path, registries, csv_path: Path, head: str, metric: str = "") -> dict:
    add_columns(csv_path)
    path = tmp_path / "c.toml"
    path.write_text(RECIPE.format(csv=csv_path, head=head, metric=metric))
    out = run_compare(validate_recipe(load_recipe(path), registries), registries, out=tmp_path / "cmp", progress=False)
    assert (out / "comparison.csv").is_file()
    return json.loads((out / "comparison.json").read_text())


def test_compare_regression_heads_on_mae(tmp_path, registries, synthetic_cohort) -> None:
    table = compare(tmp_path, registries, synthetic_cohort, 'name = "regression"\ntarget_column = "score"\nn_boot = 20',
                    metric='metric = "mae"')
    assert (table["metric"], table["mode"]) == ("mae", "min")
    rows = {r["aggregator"]: r for r in table["rows"]}
    assert set(rows) == {"mean", "abmil"} and all(r["n_runs"] == 2 for r in rows.values())
    for key in ("r2", "pearson_r", "spearman_r", "mae", "rmse"):
        assert rows["mean"][key]["mean"] is not None, key
    assert table["best"] == min(rows, key=lambda a: rows[a]["mae"]["mean"])


def test_compare_multitarget_heads(tmp_path, registries, synthetic_cohort) -> None:
    table = compare(tmp_path, registries, synthetic_cohort,
                    'name = "multitarget"\nlabel_columns = ["label", "high"]\nn_boot = 20')
    assert (table["metric"], table["mode"]) == ("balanced_accuracy", "max")
    row = table["rows"][0]
    for key in ("balanced_accuracy", "label/balanced_accuracy", "high/balanced_accuracy", "high/auc_macro"):
        assert row[key]["mean"] is not None, key
    assert table["best"] == max(table["rows"], key=lambda r: r["balanced_accuracy"]["mean"])["aggregator"]
