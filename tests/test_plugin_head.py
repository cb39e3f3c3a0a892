"""A head defined here, outside milkit, gets its own columns checked, its own stratification and
its own plots in report.html, with no change to core: what the declared Head contract promises."""

import csv
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from milkit import AggregatorOutput, ComponentConfig, Head, HeadOutput, hookimpl
from milkit.data.splits import make_splits
from milkit.errors import RecipeError
from milkit.plugins import get_plugin_manager
from milkit.recipe import load_recipe, validate_recipe
from milkit.registry import build_registries
from milkit.runner import run_recipe


class GradeConfig(ComponentConfig):
    grade_column: str = Field("grade", description="Column with the grade, 'low' or 'high'.")


class HighGrade(Head):
    """Binary high-grade detector: a plugin head with its own column, stratum and plot."""

    name = "high_grade"
    Config = GradeConfig
    monitor = "accuracy"
    monitor_mode = "max"

    def __init__(self, config: GradeConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        self.linear = nn.Linear(in_dim, 1)

    @classmethod
    def required_columns(cls, config: GradeConfig) -> tuple[str, ...]:
        return (config.grade_column,)

    @classmethod
    def stratify_column(cls, config: GradeConfig) -> str | None:
        return config.grade_column

    def collate_targets(self, rows: list[dict[str, Any]]) -> dict[str, Tensor]:
        return {"high": torch.tensor([float(r[self.config.grade_column] == "high") for r in rows])}

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        return HeadOutput({"logit": self.linear(x.embedding).squeeze(-1)})

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        return F.binary_cross_entropy_with_logits(out.values["logit"].float(), targets["high"])

    def predict(self, x: AggregatorOutput, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        p = torch.sigmoid(self.forward(x).values["logit"]).tolist()
        return [{"slide_id": r["slide_id"], "grade": r[self.config.grade_column], "p_high": v} for r, v in zip(rows, p)]

    def metrics(self, records: list[dict[str, Any]], *, train_records=None) -> dict[str, Any]:
        right = [(r["p_high"] > 0.5) == (r["grade"] == "high") for r in records]
        return {"accuracy": sum(right) / max(len(right), 1)}

    @classmethod
    def plots(cls, run, sink) -> None:
        def draw() -> None:
            from milkit.viz.plots import save_figure
            from matplotlib.figure import Figure

            fig = Figure(figsize=(4, 3))
            fig.subplots().hist([float(r["p_high"]) for r in run.rows], bins=10)
            path = save_figure(fig, sink.dir / "p_high.png")
            sink.add(path, "Predicted P(high grade)", f"{run.pooled}: histogram of p_high.")

        sink.attempt("p_high histogram", draw)
        rows = [[r["slide_id"], r["grade"], f"{float(r['p_high']):.2f}"] for r in run.rows[:5]]
        sink.add_table("grade_samples", "Grade samples", "First five evaluated slides.", ["slide", "grade", "p"], rows)


class GradePlugin:
    @hookimpl
    def milkit_register_heads(self) -> list[type[Head]]:
        return [HighGrade]


def _cohort(csv_path: Path) -> Path:
    """The synthetic cohort plus a 'grade' column: 'high' for one slide in four (rare, so strata matter)."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        row["grade"] = "high" if i % 4 == 0 else "low"
    out = csv_path.with_name("graded.csv")
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


RECIPE = """\
[run]
name = "grade"
seed = 5
[cohort]
csv = "{csv}"
val_fraction = 0.25
test_fraction = 0.25
[aggregator]
name = "mean"
[head]
name = "high_grade"
{head_extra}
[train]
epochs = 2
batch_size = 4
"""


def _registries():
    pm = get_plugin_manager(autoload=False)
    pm.register(GradePlugin(), name="grade-plugin")
    return build_registries(pm)


def test_a_plugin_head_gets_its_stratification_and_its_plots(tmp_path, synthetic_cohort):
    registries = _registries()
    graded = _cohort(synthetic_cohort)
    recipe_path = tmp_path / "grade.toml"
    recipe_path.write_text(RECIPE.format(csv=graded, head_extra=""))
    recipe = validate_recipe(load_recipe(recipe_path), registries)
    run = run_recipe(recipe, registries, out=tmp_path / "run", progress=False)

    with graded.open(newline="") as f:
        rows = list(csv.DictReader(f))
    expected = make_splits(rows, mode="holdout", seed=5, val_fraction=0.25, test_fraction=0.25, stratify="grade")
    assert json.loads((run / "splits.json").read_text())["folds"] == expected   # the head's stratum was used
    assert expected != make_splits(rows, mode="holdout", seed=5, val_fraction=0.25, test_fraction=0.25)

    index = json.loads((run / "plots" / "index.json").read_text())
    assert [i["file"] for i in index["items"] if i["section"] == "plots"] == [
        "training_curves.png", "p_high.png", "grade_samples.json"]
    page = (run / "report.html").read_text()
    assert "Predicted P(high grade)" in page and "Grade samples" in page and "histogram of p_high" in page


def test_a_plugin_heads_required_columns_are_checked_before_any_work(tmp_path, synthetic_cohort):
    recipe_path = tmp_path / "grade.toml"
    recipe_path.write_text(RECIPE.format(csv=_cohort(synthetic_cohort), head_extra='grade_column = "stage"'))
    try:
        validate_recipe(load_recipe(recipe_path), _registries())
    except RecipeError as exc:
        assert "column 'stage' (needed by head 'high_grade') is missing" in str(exc)
    else:
        raise AssertionError("a missing required column must be refused")
