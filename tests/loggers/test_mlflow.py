"""The MLflow tracker: read back with MlflowClient from the run dir's file store, one parent run with a
nested run per fold whose values equal metrics.jsonl and metrics.json."""

import json
import os
from pathlib import Path

import pytest

from milkit.loggers import epoch_scalars, final_scalars, summary_scalars

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from trackerhelpers import jsonl  # noqa: E402


def _client(run_dir: Path) -> MlflowClient:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())


def _runs(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return parents, children


def test_one_parent_run_and_one_nested_run_per_fold(tracked_run: Path):
    (parent,), children = _runs(_client(tracked_run), "trackers")
    assert sorted(children) == ["fold_0", "fold_1"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children.values()} == {parent.info.run_id}
    assert {r.info.status for r in [parent, *children.values()]} == {"FINISHED"}
    ids = json.loads((tracked_run / "mlflow_runs.json").read_text())
    assert ids["parent"] == parent.info.run_id
    assert ids["folds"] == {"0": children["fold_0"].info.run_id, "1": children["fold_1"].info.run_id}


@pytest.mark.parametrize("fold", [0, 1])
def test_fold_metrics_equal_metrics_jsonl_and_json(tracked_run: Path, fold: int):
    client = _client(tracked_run)
    _, children = _runs(client, "trackers")
    run_id = children[f"fold_{fold}"].info.run_id
    expected: dict[str, list[tuple[int, float]]] = {}
    for entry in jsonl(tracked_run, fold):
        for key, value in epoch_scalars(entry).items():
            expected.setdefault(key, []).append((entry["epoch"], value))
    result = json.loads((tracked_run / "metrics.json").read_text())["folds"][fold]
    for key, value in final_scalars(result["metrics"]).items():
        expected[key] = [(result["cost"]["epochs"], value)]
    assert {"train/loss", "val/balanced_accuracy", "final/test/balanced_accuracy"} <= set(expected)
    for key, points in expected.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == points, key


def test_parent_run_has_the_recipe_and_the_mean_over_folds(tracked_run: Path):
    client = _client(tracked_run)
    (parent,), children = _runs(client, "trackers")
    summary = json.loads((tracked_run / "metrics.json").read_text())["summary"]
    assert parent.data.metrics == summary_scalars(summary)
    assert parent.data.metrics["final/test/balanced_accuracy"] == summary["test"]["balanced_accuracy"]["mean"]
    recipe = (tracked_run / "recipe.toml").read_text()
    for run_info in (parent, children["fold_0"]):
        params = client.get_run(run_info.info.run_id).data.params
        assert params["train.lr"] == "0.001" and params["aggregator.name"] == "abmil"
        assert params["run.loggers"] == '["tensorboard", "mlflow"]'
        local = client.download_artifacts(run_info.info.run_id, "recipe.toml")
        assert Path(local).read_text() == recipe

