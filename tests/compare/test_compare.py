"""milkit compare: same folds for every aggregator, the comparison files, reuse on re-run."""

import json

import numpy as np
import pytest

from milkit.compare.runner import run_compare
from milkit.compare.stats import mean_ci, paired_test
from milkit.errors import RecipeError
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
name = "classification"
n_boot = 50

[train]
epochs = 4
batch_size = 4
lr = 1e-2


[compare]
folds = 3
seeds = [0]
aggregators = [{{name = "mean", embed_dim = 16}}, {{name = "abmil", embed_dim = 16, attn_dim = 8}}]
"""


def test_compare_writes_table_and_reuses_runs(tmp_path, registries, synthetic_cohort):
    path = tmp_path / "c.toml"
    path.write_text(RECIPE.format(csv=synthetic_cohort))
    recipe = validate_recipe(load_recipe(path), registries)
    out = run_compare(recipe, registries, out=tmp_path / "cmp", progress=False)
    for name in ("comparison.csv", "comparison.json", "comparison.png", "splits.json"):
        assert (out / name).is_file()
    table = json.loads((out / "comparison.json").read_text())
    assert [r["aggregator"] for r in table["rows"]] == ["mean", "abmil"]
    assert all(r["n_runs"] == 3 for r in table["rows"])
    row = table["rows"][0]
    assert row["balanced_accuracy"]["ci95"][0] <= row["balanced_accuracy"]["mean"] <= row["balanced_accuracy"]["ci95"][1]
    assert row["n_parameters"] > 0 and row["peak_memory_mb"] > 0
    # the same patient-disjoint folds for both aggregators
    for fold in range(3):
        a = json.loads((out / "runs/mean/seed_0" / f"fold_{fold}" / "result.json").read_text())
        b = json.loads((out / "runs/abmil/seed_0" / f"fold_{fold}" / "result.json").read_text())
        assert [r["slide_id"] for r in a["records"]["test"]] == [r["slide_id"] for r in b["records"]["test"]]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed_0/fold_*/checkpoints/last.safetensors")}
    before = (out / "comparison.csv").read_text()
    run_compare(recipe, registries, out=tmp_path / "cmp", progress=False)
    assert (out / "comparison.csv").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no training happened


def test_unknown_aggregator_in_compare_lists_registered(tmp_path, registries, synthetic_cohort):
    path = tmp_path / "c.toml"
    path.write_text(RECIPE.format(csv=synthetic_cohort).replace('{name = "abmil"', '{name = "abmill"'))
    with pytest.raises(RecipeError) as err:
        validate_recipe(load_recipe(path), registries)
    (issue,) = err.value.issues
    assert "unknown aggregator 'abmill'; did you mean 'abmil'?" in issue.message and "available aggregators" in issue.message


def test_mean_ci_and_paired_tests():
    s = mean_ci([0.6, 0.7, 0.8])
    assert s["mean"] == pytest.approx(0.7) and s["ci95"][0] < 0.7 < s["ci95"][1]
    assert s["ci95"][1] - 0.7 == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert mean_ci([0.8, 0.9, 1.0])["ci95"][1] == 1.0  # bounded metrics: the interval stays in [0, 1]
    assert mean_ci([1.0, 2.0, 3.0])["ci95"][1] > 3.0  # unbounded ones (CIDEr) are not clipped
    same = paired_test([0.8, 0.81, 0.79, 0.8, 0.82], [0.8, 0.8, 0.8, 0.81, 0.81])
    assert same["within_noise"]
    far = paired_test(list(np.linspace(0.9, 0.95, 12)), list(np.linspace(0.5, 0.55, 12)), method="bootstrap")
    assert not far["within_noise"] and far["ci95"][0] > 0.3


FAST = ["train.epochs=2", "compare.aggregators=[{name = \"mean\", embed_dim = 8}, {name = \"abmil\", embed_dim = 8}]"]


def _worker(recipe_path, out, done):
    import torch

    torch.set_num_threads(1)
    from milkit.plugins import get_plugin_manager
    from milkit.registry import build_registries

    registries = build_registries(get_plugin_manager(autoload=False))
    run_compare(validate_recipe(load_recipe(recipe_path, FAST), registries), registries, out=out, progress=False)
    done.put(True)


def test_two_processes_share_one_compare_dir(tmp_path, registries, synthetic_cohort):
    """Independent processes (a cluster array job) divide the runs by atomic claims; the table
    equals a single-process comparison."""
    import multiprocessing as mp

    path = tmp_path / "c.toml"
    path.write_text(RECIPE.format(csv=synthetic_cohort))
    single = run_compare(validate_recipe(load_recipe(path, FAST), registries), registries, out=tmp_path / "one",
                         progress=False)
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, tmp_path / "two", done)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    shared = tmp_path / "two"
    if not (shared / "comparison.json").is_file():  # both finished their share before the other: one more pass
        run_compare(validate_recipe(load_recipe(path, FAST), registries), registries, out=shared, progress=False)
    owners = {json.loads(p.read_text())["fold"] for p in shared.glob("runs/*/seed_0/fold_*/result.json")}
    assert owners == {0, 1, 2} and not list(shared.glob("runs/*/seed_0/fold_*/.claim"))
    a = json.loads((single / "comparison.json").read_text())
    b = json.loads((shared / "comparison.json").read_text())
    assert a["runs"] == b["runs"]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra["balanced_accuracy"] == rb["balanced_accuracy"] and ra["auc_macro"] == rb["auc_macro"]


def test_an_entry_may_bring_its_own_head(tmp_path, registries, synthetic_cohort):
    path = tmp_path / "c.toml"
    entries = ('aggregators = [{name = "mean", embed_dim = 16}, '
               '{name = "mean", embed_dim = 16, head = {name = "cox", n_boot = 0}}]')
    path.write_text(RECIPE.format(csv=synthetic_cohort).replace(RECIPE.splitlines()[-1].replace("{{", "{").replace(
        "}}", "}"), entries).replace("folds = 3", "folds = 2"))
    recipe = validate_recipe(load_recipe(path), registries)
    out = run_compare(recipe, registries, out=tmp_path / "cmp", progress=False)
    table = json.loads((out / "comparison.json").read_text())
    rows = {r["aggregator"]: r for r in table["rows"]}
    assert set(rows) == {"mean", "mean+cox"}
    assert "balanced_accuracy" in rows["mean"] and "c_index" in rows["mean+cox"]     # each head's own metrics
    cox = json.loads((out / "runs/mean+cox/seed_0/fold_0/result.json").read_text())
    assert "risk" in cox["records"]["test"][0]


@pytest.mark.parametrize(("head", "message"), [
    ('{name = "coxx"}', "unknown head 'coxx'; did you mean 'cox'?"),
    ('{name = "cox", n_boot = -1}', "entry 2 (mean): head.n_boot"),
    ('{n_boot = 3}', "head must be a table with a name"),
])
def test_a_bad_entry_head_is_named(tmp_path, registries, synthetic_cohort, head, message):
    path = tmp_path / "c.toml"
    text = RECIPE.format(csv=synthetic_cohort).replace('{name = "abmil", embed_dim = 16, attn_dim = 8}',
                                                        f'{{name = "mean", label = "m2", head = {head}}}')
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        validate_recipe(load_recipe(path), registries)
    assert any(message in i.message for i in err.value.issues), [i.message for i in err.value.issues]


def test_an_entry_may_override_train_keys(tmp_path, registries, synthetic_cohort):
    path = tmp_path / "c.toml"
    entries = ('aggregators = [{name = "mean", embed_dim = 16}, '
               '{name = "mean", embed_dim = 16, label = "longer", train = {epochs = 6, lr = 5e-3}}]')
    text = RECIPE.format(csv=synthetic_cohort)
    text = text.replace(text.splitlines()[-1], entries).replace("folds = 3", "folds = 2")
    path.write_text(text)
    out = run_compare(validate_recipe(load_recipe(path), registries), registries, out=tmp_path / "cmp", progress=False)
    epochs = {label: len((out / f"runs/{label}/seed_0/fold_0/metrics.jsonl").read_text().splitlines())
              for label in ("mean", "longer")}
    assert epochs == {"mean": 4, "longer": 6}
    bad = text.replace("train = {epochs = 6, lr = 5e-3}", "train = {epochz = 6}")
    path.write_text(bad)
    with pytest.raises(RecipeError, match=r"unknown \[train\] key\(s\) epochz"):
        validate_recipe(load_recipe(path), registries)
