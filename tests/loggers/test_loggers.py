"""milkit.loggers: tracker names, recipe validation (unknown trackers, missing packages, before any work),
and a failing tracker that costs the run nothing."""

import dataclasses
import json
import logging
import sys
import types
from pathlib import Path

import pytest

from milkit.errors import RecipeError
from milkit.loggers import LOGGERS, LoggerEntry, RunLogger, epoch_scalars, final_scalars, recipe_params, summary_scalars
from trackerhelpers import jsonl, run, write_recipe


def test_tracker_names_follow_metrics_jsonl():
    entry = {"fold": 1, "epoch": 3, "train_loss": 0.5, "train_aux_instance": 0.25, "lr": 1e-3, "seconds": 1.5,
             "val_loss": 0.75, "val_balanced_accuracy": 0.8, "flag": True, "note": "x"}
    assert epoch_scalars(entry) == {"train/loss": 0.5, "train/aux_instance": 0.25, "lr": 1e-3, "seconds": 1.5,
                                    "val/loss": 0.75, "val/balanced_accuracy": 0.8}
    metrics = {"test": {"auc": 0.9, "auc_ci95": [0.8, 1.0], "confusion": [[1, 2]], "n": 15}, "val": {"auc": 1.0}}
    assert final_scalars(metrics) == {"final/test/auc": 0.9, "final/test/n": 15.0, "final/val/auc": 1.0}
    summary = {"test": {"auc": {"mean": 0.7, "std": 0.1}, "cindex": {"mean": None, "std": None}}}
    assert summary_scalars(summary) == {"final/test/auc": 0.7, "final/test/auc_std": 0.1}
    assert recipe_params({"run": {"seed": 0, "loggers": ["mlflow"], "deterministic": True}, "train": {"lr": 1e-4}}) == {
        "run.seed": "0", "run.loggers": '["mlflow"]', "run.deterministic": "true", "train.lr": "0.0001"}


def _problems(path: Path, registries) -> list[str]:
    from milkit.recipe import load_recipe, validate_recipe

    with pytest.raises(RecipeError) as info:
        validate_recipe(load_recipe(path), registries)
    return [f"{i.key}: {i.message}" for i in info.value.issues]


def test_unknown_tracker_lists_the_valid_ones(tmp_path: Path, registries):
    (problem,) = _problems(write_recipe(tmp_path, ["tensorbord"]), registries)
    assert problem == "[run] loggers: unknown logger 'tensorbord'; valid loggers: tensorboard, mlflow"


def test_missing_package_is_a_recipe_error_naming_the_extra(tmp_path: Path, registries, monkeypatch):
    monkeypatch.setitem(LOGGERS, "mlflow", dataclasses.replace(LOGGERS["mlflow"], package="milkit_no_such_package"))
    (problem,) = _problems(write_recipe(tmp_path, ["mlflow"]), registries)
    assert "pip install 'milkit[mlflow]'" in problem and problem.startswith("[run] loggers: logger 'mlflow' needs")
    assert not (tmp_path / "run").exists()


def test_tracking_uri_needs_the_mlflow_tracker(tmp_path: Path, registries):
    (problem,) = _problems(write_recipe(tmp_path, ["tensorboard"], mlflow_tracking_uri="sqlite:///x.db"), registries)
    assert problem.startswith("[run] mlflow_tracking_uri: set, but [run] loggers does not name \"mlflow\"")


class _Recorder(RunLogger):
    name = "recorder"
    calls: list[tuple] = []

    def start_run(self, recipe_toml: str, params: dict[str, str]) -> None:
        self.calls.append(("start_run", params["run.name"]))

    def start_fold(self, fold: int, *, first_epoch: int) -> None:
        self.calls.append(("start_fold", fold, first_epoch))

    def log_metrics(self, fold, step, metrics) -> None:
        self.calls.append(("log_metrics", fold, step))
        if step == 2 and fold is not None and "train/loss" in metrics:
            raise ConnectionError("tracking server went away")

    def close(self, *, failed: bool) -> None:
        self.calls.append(("close", failed))


class _Unstartable(RunLogger):
    name = "unstartable"

    def __init__(self, run_dir, recipe, *, resume):
        raise PermissionError("no write access")


def test_a_failing_tracker_is_a_warning_and_the_run_goes_on(tmp_path: Path, monkeypatch, caplog):
    module = types.ModuleType("milkit_test_trackers")
    module.Recorder, module.Unstartable = _Recorder, _Unstartable
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(LOGGERS, "recorder", LoggerEntry(module.__name__, "Recorder", "json", "recorder"))
    monkeypatch.setitem(LOGGERS, "unstartable", LoggerEntry(module.__name__, "Unstartable", "json", "unstartable"))
    _Recorder.calls = []
    with caplog.at_level(logging.WARNING, logger="milkit"):
        out = run(write_recipe(tmp_path, ["unstartable", "recorder"], folds=1), tmp_path / "run")
    assert [e["epoch"] for e in jsonl(out, 0)] == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["folds"][0]["metrics"]["test"]
    # epoch 2 raised: the recorder got nothing after it (no final metrics, no close)
    assert _Recorder.calls == [("start_run", "trackers"), ("start_fold", 0, 1), ("log_metrics", 0, 1),
                               ("log_metrics", 0, 2)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'unstartable' could not start (PermissionError: no write access)" in w for w in warnings)
    assert any("'recorder' failed (log_metrics: ConnectionError: tracking server went away)" in w for w in warnings)



def test_resume_continues_each_trackers_runs(tmp_path: Path):
    """A finished run resumed with more epochs logs into the same MLflow runs and TensorBoard folder, each
    epoch once, and its new final metrics are the latest."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    import numpy as np
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run(write_recipe(tmp_path, ["tensorboard", "mlflow"], name="resumed", folds=1), out)
    ids = json.loads((out / "mlflow_runs.json").read_text())
    run(write_recipe(tmp_path, ["tensorboard", "mlflow"], name="resumed", folds=1, epochs=3), out, resume=True)
    assert json.loads((out / "mlflow_runs.json").read_text()) == ids
    entries = jsonl(out, 0)
    assert [e["epoch"] for e in entries] == [1, 2, 3]
    test_accuracy = json.loads((out / "metrics.json").read_text())["folds"][0]["metrics"]["test"]["balanced_accuracy"]

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    history = sorted(client.get_metric_history(ids["folds"]["0"], "train/loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(e["epoch"], e["train_loss"]) for e in entries]
    fold_run = client.get_run(ids["folds"]["0"])
    assert fold_run.data.metrics["final/test/balanced_accuracy"] == test_accuracy and fold_run.info.status == "FINISHED"
    assert client.get_run(ids["parent"]).data.params["train.epochs"] == "2"  # MLflow never changes a param

    events = EventAccumulator(str(out / "tensorboard" / "fold_0"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (e["epoch"], float(np.float32(e["train_loss"]))) for e in entries]
    assert events.Scalars("final/test/balanced_accuracy")[-1].value == float(np.float32(test_accuracy))
    assert len(events.Tensors("recipe/text_summary")) == 1
