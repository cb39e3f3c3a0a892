"""``[run] loggers = ["mlflow"]``: one MLflow run per milkit run (the experiment is ``[run] name``) with
one nested run per fold, in a local file store ``<run dir>/mlruns`` unless ``[run] mlflow_tracking_uri``
names another (``sqlite:///...``, ``http://...``). ``mlflow ui --backend-store-uri <run dir>/mlruns``
shows it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from milkit.loggers import RunLogger
from milkit.recipe.validate import ResolvedRecipe

RUNS_FILE = "mlflow_runs.json"
"""In the run dir: the tracking URI and the MLflow run ids, so ``--resume`` continues the same runs."""
PARAMS_PER_CALL = 100  # MLflow's batch limit for params


def default_tracking_uri(run_dir: Path) -> str:
    return (run_dir / "mlruns").resolve().as_uri()


class MLflowLogger(RunLogger):
    """Params (the resolved recipe, ``table.key``) and ``recipe.toml`` on the parent run and each fold's
    run; per-epoch and final metrics on the fold's run; the mean over folds on the parent run."""

    name = "mlflow"

    def __init__(self, run_dir: Path, recipe: ResolvedRecipe, *, resume: bool) -> None:
        super().__init__(run_dir, recipe, resume=resume)
        self.uri = recipe.run.mlflow_tracking_uri or default_tracking_uri(run_dir)
        if "://" not in self.uri or self.uri.startswith("file:"):
            # MLflow 3 keeps its file store for existing users behind this opt-in; milkit's default store
            # is a folder inside the run dir, so it opts in (set the variable yourself to override)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        self.ids_path = run_dir / RUNS_FILE
        known = json.loads(self.ids_path.read_text()) if resume and self.ids_path.is_file() else {}
        self.ids: dict[str, object] = known if known.get("tracking_uri") == self.uri else {}
        self.params: dict[str, str] = {}
        self.recipe_toml = ""
        self.open_folds: dict[int, str] = {}

    def _save_ids(self) -> None:
        self.ids_path.write_text(json.dumps({**self.ids, "tracking_uri": self.uri}, indent=1))

    def _reuse(self, run_id: object) -> str | None:
        """A run id from an interrupted run, set running again; None when the store no longer has it."""
        if not isinstance(run_id, str):
            return None
        try:
            self.client.update_run(run_id, status="RUNNING")
        except Exception:  # noqa: BLE001 - deleted or another store: start a new run
            return None
        return run_id

    def _describe(self, run_id: str) -> None:
        """Params not logged yet (MLflow refuses to change one; a resumed run may change [train] epochs)
        and the recipe as the artifact ``recipe.toml``."""
        have = self.client.get_run(run_id).data.params
        params = [Param(k, v) for k, v in self.params.items() if k not in have]
        for i in range(0, len(params), PARAMS_PER_CALL):
            self.client.log_batch(run_id, params=params[i:i + PARAMS_PER_CALL])
        self.client.log_text(run_id, self.recipe_toml, "recipe.toml")

    def start_run(self, recipe_toml: str, params: dict[str, str]) -> None:
        self.recipe_toml, self.params = recipe_toml, params
        name = self.recipe.run.name
        parent = self._reuse(self.ids.get("parent"))
        if parent is None:
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            parent = self.client.create_run(experiment_id, run_name=name,
                                            tags={"milkit.run_dir": str(self.run_dir.resolve())}).info.run_id
            self.ids = {"experiment_id": experiment_id, "parent": parent, "folds": {}}
        self.ids["parent"] = parent
        self._save_ids()
        self._describe(parent)

    def start_fold(self, fold: int, *, first_epoch: int) -> None:
        folds: dict[str, str] = self.ids.setdefault("folds", {})  # type: ignore[assignment]
        run_id = self._reuse(folds.get(str(fold)))
        if run_id is None:
            parent = str(self.ids["parent"])
            run_id = self.client.create_run(str(self.ids["experiment_id"]), run_name=f"fold_{fold}",
                                            tags={MLFLOW_PARENT_RUN_ID: parent, "milkit.fold": str(fold)}).info.run_id
            folds[str(fold)] = run_id
            self._save_ids()
            self._describe(run_id)
        self.open_folds[fold] = run_id

    def log_metrics(self, fold: int | None, step: int, metrics: dict[str, float]) -> None:
        run_id = self.open_folds.get(fold) if fold is not None else self.ids.get("parent")
        if not isinstance(run_id, str):
            return
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def end_fold(self, fold: int) -> None:
        run_id = self.open_folds.pop(fold, None)
        if run_id is not None:
            self.client.set_terminated(run_id, "FINISHED")

    def close(self, *, failed: bool) -> None:
        for run_id in self.open_folds.values():
            self.client.set_terminated(run_id, "FAILED")
        self.open_folds.clear()
        parent = self.ids.get("parent")
        if isinstance(parent, str):
            self.client.set_terminated(parent, "FAILED" if failed else "FINISHED")
