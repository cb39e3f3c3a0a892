"""Helpers for the tracker tests: a small cohort, recipes with [run] loggers, runs, metrics.jsonl."""

import importlib.util
import json
from pathlib import Path

RECIPE = """\
[run]
seed = 1
name = "{name}"
loggers = {loggers}
[cohort]
csv = "{csv}"
{splits}
val_fraction = 0.25
[aggregator]
name = "abmil"
[head]
name = "classification"
n_boot = 0
[train]
epochs = {epochs}
batch_size = 4
lr = 1e-3
"""


def _root_conftest():
    """tests/conftest.py loaded by path (the tests folder is not a package)."""
    spec = importlib.util.spec_from_file_location("milkit_tests_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_recipe(root: Path, loggers: list[str], *, name: str = "trackers", epochs: int = 2, folds: int = 2,
                 **run_keys) -> Path:
    """A recipe of ``folds`` folds (1: holdout) on a small synthetic cohort under ``root`` (written once)
    with ``[run] loggers`` and other ``[run]`` keys."""
    csv_path = root / "cohort" / "cohort.csv"
    if not csv_path.is_file():
        _root_conftest().write_synthetic_cohort(root / "cohort", n_slides=24)
    splits = f'splits = "kfold"\nfolds = {folds}' if folds > 1 else 'splits = "holdout"\ntest_fraction = 0.25'
    text = RECIPE.format(name=name, loggers=json.dumps(loggers), csv=csv_path, epochs=epochs, splits=splits)
    text = text.replace("[cohort]", "".join(f"{k} = {json.dumps(v)}\n" for k, v in run_keys.items()) + "[cohort]")
    path = root / f"recipe-{len(list(root.glob('*.toml')))}.toml"
    path.write_text(text)
    return path


def run(path: Path, out: Path, *, resume: bool = False) -> Path:
    """``milkit run`` without plots and report.html (not what these tests look at)."""
    from unittest import mock

    from milkit.plugins import get_plugin_manager
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.registry import build_registries
    from milkit.runner import run_recipe

    registries = build_registries(get_plugin_manager(autoload=False))
    with mock.patch("milkit.runner.write_visuals"):
        return run_recipe(validate_recipe(load_recipe(path), registries), registries, out=out, resume=resume,
                          progress=False)


def jsonl(run_dir: Path, fold: int) -> list[dict]:
    return [json.loads(line) for line in (run_dir / f"fold_{fold}" / "metrics.jsonl").read_text().splitlines()]
