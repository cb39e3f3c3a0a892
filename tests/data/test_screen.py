"""Unusable bags cost only themselves: they are left out, named on the console, in metrics.json and
report.html; ``[cohort] strict = true`` aborts on the first one instead."""

import io
import json

import h5py
import numpy as np
import pytest
from rich.console import Console

from milkit.errors import DataError
from milkit.recipe import load_recipe, validate_recipe
from milkit.runner import run_recipe

RECIPE = """\
[run]
seed = 2
[cohort]
csv = "{csv}"
val_fraction = 0.25
test_fraction = 0.25
strict = {strict}
[aggregator]
name = "mean"
embed_dim = 8
[head]
name = "classification"
n_boot = 0
[train]
epochs = 1
batch_size = 4
"""


def _spoil(features) -> dict[str, str]:
    """Damage five bags of the synthetic cohort in five ways; return slide -> expected reason text."""
    with h5py.File(features / "s001.h5", "r+") as f:
        data = f["features"][()]
        data[3, 2] = np.nan
        del f["features"]
        f["features"] = data
    with h5py.File(features / "s002.h5", "w") as f:
        f["features"] = np.zeros((0, 16), dtype="float32")
    (features / "s003.h5").write_bytes(b"not an hdf5 file at all")
    with h5py.File(features / "s004.h5", "w") as f:
        f["features"] = np.ones((7, 12), dtype="float32")
    (features / "s005.h5").unlink()
    return {"s001": "NaN/Inf", "s002": "no patches", "s003": "s003.h5", "s004": "12 wide", "s005": "no feature file"}


def _recipe(tmp_path, csv, strict: bool):
    path = tmp_path / f"strict_{strict}.toml"
    path.write_text(RECIPE.format(csv=csv, strict=str(strict).lower()))
    return path


def test_bad_bags_are_left_out_and_named_everywhere(tmp_path, registries, synthetic_cohort):
    expected = _spoil(synthetic_cohort.parent / "features")
    out = io.StringIO()
    recipe = validate_recipe(load_recipe(_recipe(tmp_path, synthetic_cohort, False)), registries)
    run = run_recipe(recipe, registries, out=tmp_path / "run", progress=False,
                     console=Console(file=out, width=300, color_system=None))
    excluded = {e["slide_id"]: e["reason"] for e in json.loads((run / "metrics.json").read_text())["excluded_slides"]}
    assert set(excluded) == set(expected)
    for sid, text in expected.items():
        assert text in excluded[sid], (sid, excluded[sid])
    console = out.getvalue()
    assert "5 slide(s) left out of this run" in console and all(f"{sid}:" in console for sid in expected)
    splits = json.loads((run / "splits.json").read_text())["folds"][0]
    assert not set(expected) & {s for ids in splits.values() for s in ids}           # never in any split
    page = (run / "report.html").read_text()
    assert "Slides left out" in page and all(sid in page for sid in expected)


@pytest.mark.parametrize("damage", ["nan", "missing"])
def test_strict_aborts_on_the_first_bad_bag(tmp_path, registries, synthetic_cohort, damage):
    features = synthetic_cohort.parent / "features"
    if damage == "nan":
        with h5py.File(features / "s001.h5", "r+") as f:
            data = f["features"][()]
            data[0, 0] = np.inf
            del f["features"]
            f["features"] = data
    else:
        (features / "s005.h5").unlink()
    recipe = validate_recipe(load_recipe(_recipe(tmp_path, synthetic_cohort, True)), registries)
    with pytest.raises(DataError, match="strict = true") as info:
        run_recipe(recipe, registries, out=tmp_path / "run", progress=False)
    assert ("s001" if damage == "nan" else "s005") in str(info.value)
    assert not (tmp_path / "run" / "splits.json").exists()                          # nothing trained, no splits
