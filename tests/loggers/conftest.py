"""One short two-fold run with both trackers, shared by the tracker tests."""

from pathlib import Path

import pytest
from trackerhelpers import run, write_recipe


@pytest.fixture(scope="session")
def tracked_run(tmp_path_factory) -> Path:
    """The run dir of two folds x two epochs logged to TensorBoard and MLflow."""
    root = tmp_path_factory.mktemp("trackers")
    return run(write_recipe(root, ["tensorboard", "mlflow"]), root / "run")
