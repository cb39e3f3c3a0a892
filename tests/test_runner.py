"""End to end on a small synthetic cohort: run dir contents, learning, resume equivalence."""

import json
from pathlib import Path

import pytest

from milkit.recipe import load_recipe, validate_recipe
from milkit.runner import load_run, run_recipe

RECIPE = """\
[run]
name = "t"
seed = 3

[cohort]
csv = "{csv}"
val_fraction = 0.25
test_fraction = 0.25

[aggregator]
name = "{agg}"
embed_dim = 16

[head]
name = "classification"

[train]
epochs = {epochs}
batch_size = 4
lr = 2e-2
scheduler = "step"
gamma = 0.9
"""


def resolve(tmp_path: Path, registries, csv: Path, *, agg="abmil", epochs=12, overrides=None):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(csv=csv, agg=agg, epochs=epochs))
    return validate_recipe(load_recipe(path, overrides), registries)


def test_run_dir_contents_and_learning(tmp_path, registries, synthetic_cohort):
    run_dir = run_recipe(resolve(tmp_path, registries, synthetic_cohort), registries, out=tmp_path / "run", progress=False)
    for name in ("recipe.toml", "splits.json", "metrics.json", "predictions.csv", "log.txt",
                 "fold_0/metrics.jsonl", "fold_0/checkpoints/best.safetensors", "fold_0/target_state.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["summary"]["test"]["balanced_accuracy"]["mean"] >= 0.75
    epochs = [json.loads(x) for x in (run_dir / "fold_0/metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, 13)) and "val_balanced_accuracy" in epochs[0]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    best = metrics["folds"][0]["best_epoch"]
    assert best == max(epochs, key=lambda e: (e["val_balanced_accuracy"], -e["epoch"]))["epoch"]  # val only
    model, recipe = load_run(run_dir, registries)
    assert recipe.aggregator.name == "abmil" and model.head.classes == ["class0", "class1", "class2"]


def test_resume_after_interruption_matches_uninterrupted(tmp_path, registries, synthetic_cohort):
    full = run_recipe(resolve(tmp_path, registries, synthetic_cohort), registries, out=tmp_path / "full", progress=False)
    # "kill" after 3 epochs: a run configured for 3 epochs leaves the same epoch-3 checkpoint behind
    part = tmp_path / "part"
    run_recipe(resolve(tmp_path, registries, synthetic_cohort, epochs=5), registries, out=part, progress=False)
    (part / "fold_0" / "result.json").unlink()
    resumed = run_recipe(resolve(tmp_path, registries, synthetic_cohort), registries, out=part, resume=True, progress=False)
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert a["folds"][0]["metrics"] == b["folds"][0]["metrics"]
    assert (full / "predictions.csv").read_text() == (resumed / "predictions.csv").read_text()
    lines = (resumed / "fold_0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(1, 13))


def test_kfold_writes_every_fold(tmp_path, registries, synthetic_cohort):
    resolved = resolve(tmp_path, registries, synthetic_cohort, agg="mean", epochs=2,
                       overrides=["cohort.splits=\"kfold\"", "cohort.folds=3"])
    run_dir = run_recipe(resolved, registries, out=tmp_path / "kf", progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["folds"]) == 3 and set(metrics["summary"]["test"]["accuracy"]) == {"mean", "std"}


def test_nan_features_name_the_slide(tmp_path, registries, synthetic_cohort):
    import h5py
    import numpy as np

    with h5py.File(synthetic_cohort.parent / "features" / "s005.h5", "r+") as f:
        data = f["features"][...]
        data[0, 0] = np.nan
        f["features"][...] = data
    from milkit.errors import DataError

    strict = resolve(tmp_path, registries, synthetic_cohort, epochs=1, overrides=["cohort.strict=true"])
    with pytest.raises(DataError, match="slide s005: .* NaN/Inf"):
        run_recipe(strict, registries, out=tmp_path / "n", progress=False)
    run = run_recipe(resolve(tmp_path, registries, synthetic_cohort, epochs=1), registries, out=tmp_path / "m",
                     progress=False)  # by default the slide is left out and the run goes on
    excluded = json.loads((run / "metrics.json").read_text())["excluded_slides"]
    assert [e["slide_id"] for e in excluded] == ["s005"] and "NaN/Inf" in excluded[0]["reason"]


def test_resume_with_a_changed_recipe_is_refused_and_says_what_differs(tmp_path, registries, synthetic_cohort):
    from milkit.errors import UsageError

    run_recipe(resolve(tmp_path, registries, synthetic_cohort, epochs=1), registries, out=tmp_path / "run",
               progress=False)
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    changed = resolve(tmp_path, registries, synthetic_cohort, epochs=2, overrides=["aggregator.embed_dim=8"])
    with pytest.raises(UsageError) as info:
        run_recipe(changed, registries, out=tmp_path / "run", resume=True, progress=False)
    message = str(info.value)
    assert "[aggregator] embed_dim: 16 -> 8" in message and "--force-new" in message
    assert "epochs" not in message                          # more epochs continue the same model: allowed
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before             # nothing was touched
    longer = resolve(tmp_path, registries, synthetic_cohort, epochs=2)
    run = run_recipe(longer, registries, out=tmp_path / "run", resume=True, progress=False)
    assert json.loads((run / "metrics.json").read_text())["folds"][0]["cost"]["epochs"] == 2


def test_features_of_another_width_are_refused_by_name(tmp_path, registries, synthetic_cohort):
    import numpy as np

    from milkit.data.feature_formats import write_bag
    from milkit.errors import DataError
    from milkit.viz.attention import RunScorer

    run = run_recipe(resolve(tmp_path, registries, synthetic_cohort, epochs=1), registries, out=tmp_path / "run",
                     progress=False)
    wide = synthetic_cohort.parent / "features" / "s000.h5"
    write_bag(wide, np.ones((5, 24), "float32"), np.zeros((5, 2)), {})
    with pytest.raises(DataError, match=r"s000\.h5: features are 24 wide but this model was trained on 16-wide"):
        RunScorer(run, registries=registries).scores("s000")
