"""Shared fixtures: the ../shared data folder (skipped cleanly when absent), fresh plugin managers, one
torch thread for the tiny-model folders."""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _histgen_disabled() -> bool:
    from milkit.plugins import RENAMED_PLUGINS

    blocked = {s.strip() for s in os.environ.get("MILKIT_DISABLE_PLUGINS", "").split(",")}
    return "milkit.histgen" in {RENAMED_PLUGINS.get(name, name) for name in blocked}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "histgen: needs the bundled HistGen plugin (skipped when it is disabled)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``MILKIT_DISABLE_PLUGINS=milkit.histgen`` the HistGen tests are skipped, everything else runs."""
    if not _histgen_disabled():
        return
    skip = pytest.mark.skip(reason="the HistGen plugin is disabled (MILKIT_DISABLE_PLUGINS=milkit.histgen)")
    for item in items:
        if "histgen" in item.keywords or Path(str(item.path)).is_relative_to(REPO / "tests" / "histgen"):
            item.add_marker(skip)


ONE_THREAD_FOLDERS = ("extract", "components/extractors", "histgen")
"""Test folders of tiny models and batches: one intra-op thread avoids OpenMP hand-off overhead and
makes timings steadier on a shared 2-core machine."""


@pytest.fixture(autouse=True)
def _fixed_torch_threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A fixed thread count for every run a test starts (results do not depend on the machine's load);
    one thread in the tiny-model folders."""
    from milkit.threads import ENV_THREADS, available_cores

    rel = request.path.relative_to(REPO / "tests").as_posix()
    one = any(rel.startswith(folder + "/") for folder in ONE_THREAD_FOLDERS)
    before = torch.get_num_threads()
    monkeypatch.setenv(ENV_THREADS, "1" if one else str(available_cores()))
    if one:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; the test is skipped when it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture
def registries():
    """Registries built from a fresh plugin manager without entry-point autoload."""
    from milkit.plugins import get_plugin_manager
    from milkit.registry import build_registries

    return build_registries(get_plugin_manager(autoload=False))


def write_synthetic_cohort(root: Path, *, n_slides: int = 36, n_classes: int = 3, dim: int = 16, seed: int = 0) -> Path:
    """A small learnable cohort of HDF5 bags: class c shifts the mean of feature c.

    Writes ``root/features/<slide_id>.h5`` and ``root/cohort.csv`` (slide_id, case_id,
    label, time, event, report) and returns the csv path. Every 4th patient has 2 slides.
    """
    import csv

    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    (root / "features").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_slides):
        label = i % n_classes
        case = f"case{i // 2:03d}" if i % 4 < 2 else f"case{i:03d}x"
        n = int(rng.integers(5, 40))
        feats = rng.normal(size=(n, dim)).astype("float32")
        feats[: n // 2, label] += 4.0
        coords = np.stack(np.meshgrid(np.arange(8), np.arange(8)), -1).reshape(-1, 2)[:n] * 224
        with h5py.File(root / "features" / f"s{i:03d}.h5", "w") as f:
            f["features"] = feats
            f["coords"] = coords
        time = float(rng.exponential(10.0 / (1 + label)) + 0.1)
        rows.append({"slide_id": f"s{i:03d}", "case_id": case, "label": f"class{label}", "time": round(time, 3),
                     "event": int(rng.random() < 0.7), "report": f"tumor of type {label} . grade {label} ."})
    with (root / "cohort.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "cohort.csv"


@pytest.fixture
def synthetic_cohort(tmp_path: Path) -> Path:
    return write_synthetic_cohort(tmp_path / "cohort")


def _survival_records(n: int, seed: int, strength: float = 2.0) -> list[dict]:
    """Exponential event times with hazard exp(strength * risk): higher risk => earlier event."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t_event = rng.exponential(np.exp(-strength * risk))
    t_cens = rng.exponential(2.0, n)
    return [{"slide_id": f"s{i}", "time": float(min(a, c)), "event": int(a <= c), "risk": float(r)}
            for i, (a, c, r) in enumerate(zip(t_event, t_cens, risk))]


@pytest.fixture
def survival_records() -> Callable[..., list[dict]]:
    """``survival_records(n, seed, strength=2.0)`` -> records with ``time``, ``event``, ``risk``."""
    return _survival_records


BRIEF_RECIPE = """\
[run]
seed = 1
[cohort]
csv = "{csv}"
val_fraction = 0.25
test_fraction = 0.25
[aggregator]
{aggregator}
[head]
name = "classification"
n_boot = 0
[train]
epochs = 2
batch_size = 4
{train}
"""


@pytest.fixture
def train_briefly(tmp_path: Path, synthetic_cohort: Path) -> Callable[..., list[dict]]:
    """``train_briefly(registries, name="abmil", train={"lr": 1e-3}, **aggregator_keys)``: two epochs of
    classification on the synthetic cohort; returns fold 0's ``metrics.jsonl`` entries."""
    import json

    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe

    def run(registries, *, name: str, train: dict | None = None, **keys) -> list[dict]:
        table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in {"name": name, **keys}.items())
        extra = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (train or {}).items())
        path = tmp_path / f"{name}-{len(list(tmp_path.glob('*.toml')))}.toml"
        path.write_text(BRIEF_RECIPE.format(csv=synthetic_cohort, aggregator=table, train=extra))
        out = run_recipe(validate_recipe(load_recipe(path), registries), registries, out=path.with_suffix(""),
                         progress=False)
        return [json.loads(x) for x in (out / "fold_0" / "metrics.jsonl").read_text().splitlines()]

    return run
