"""Patient-level bags: one row and one bag per case_id, slides side by side, targets that must agree."""

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from milkit.data.bags import BagStore
from milkit.data.cases import GAP_PX, SLIDE_IDS, CaseBags, case_cohort
from milkit.data.cohort import Cohort
from milkit.errors import DataError


def write_bag(path: Path, n: int, dim: int, value: float, x0: int = 0) -> None:
    coords = np.stack([x0 + 224 * np.arange(n), np.zeros(n)], 1)
    with h5py.File(path, "w") as f:
        f["features"] = np.full((n, dim), value, np.float32)
        f["coords"] = coords


def small_cohort(tmp_path: Path) -> tuple[Cohort, BagStore]:
    rows = [{"slide_id": "a1", "case_id": "A", "label": "x", "report": "r a"},
            {"slide_id": "a2", "case_id": "A", "label": "x", "report": None},
            {"slide_id": "b1", "case_id": "B", "label": "y", "report": "r b"}]
    paths = {}
    for k, (sid, n) in enumerate((("a1", 3), ("a2", 2), ("b1", 4))):
        paths[sid] = tmp_path / f"{sid}.h5"
        write_bag(paths[sid], n, 4, float(k), x0=1000 * k)
    return Cohort(rows=rows, source=tmp_path / "c.csv", given_splits={"train": ["a1", "a2"], "test": ["b1"]}), \
        BagStore(paths, prefetch_workers=0)


def test_one_row_per_case_with_its_slides_and_agreeing_targets(tmp_path: Path) -> None:
    cohort, store = small_cohort(tmp_path)
    cases, bags = case_cohort(cohort, store, ["label", "report"])
    assert [(r["slide_id"], r["case_id"], r[SLIDE_IDS], r["label"], r["report"]) for r in cases.rows] == [
        ("A", "A", "a1;a2", "x", "r a"), ("B", "B", "b1", "y", "r b")]     # an empty cell takes the other's value
    assert cases.given_splits == {"train": ["A"], "test": ["B"]}
    assert set(bags.paths) == {"A", "B"} and "A" in bags and "a1" not in bags and bags.feature_dim == 4


def test_a_case_whose_slides_disagree_is_named(tmp_path: Path) -> None:
    cohort, store = small_cohort(tmp_path)
    cohort.rows[1]["label"] = "y"
    with pytest.raises(DataError, match=r"case A: its slides disagree on 'label' \(a1='x', a2='y'\).*bag = \"slide\""):
        case_cohort(cohort, store, ["label"])
    cohort.rows[1]["label"] = "x"
    cohort.given_splits = {"train": ["a1"], "test": ["a2", "b1"]}
    with pytest.raises(DataError, match="case A: its slides are in both 'train' and 'test'"):
        case_cohort(cohort, store, ["label"])


def test_a_case_bag_is_its_slides_side_by_side(tmp_path: Path) -> None:
    cohort, store = small_cohort(tmp_path)
    _, bags = case_cohort(cohort, store, [])
    feats, coords = bags.load("A")
    assert feats[:, 0].tolist() == [0, 0, 0, 1, 1] and coords.shape == (5, 2)
    first, second = coords[:3, 0], coords[3:, 0]
    assert first.tolist() == [0, 224, 448]                                  # slide a1 starts at 0
    assert second.tolist() == [448 + GAP_PX, 448 + GAP_PX + 224]            # a2 starts GAP_PX after a1's last patch
    assert torch.equal(coords[:, 1], torch.zeros(5))
    assert bags.parts("A") == [("a1", 3), ("a2", 2)]
    assert torch.equal(bags.load("B")[1][:, 0], torch.tensor([0.0, 224, 448, 672]))   # shifted to start at 0


def test_patient_level_run_predicts_each_case_once(tmp_path: Path, registries) -> None:
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe

    rng = np.random.default_rng(0)
    (tmp_path / "f").mkdir()
    rows = []
    for c in range(24):
        label = c % 2
        for s in range(1 + (c % 3 == 0)):                                  # every third case has two slides
            sid = f"c{c:02d}-{s}"
            feats = rng.normal(size=(int(rng.integers(4, 12)), 8)).astype("float32")
            feats[:, label] += 3
            with h5py.File(tmp_path / "f" / f"{sid}.h5", "w") as f:
                f["features"] = feats
                f["coords"] = np.stack([224 * np.arange(len(feats)), np.zeros(len(feats))], 1)
            rows.append({"slide_id": sid, "case_id": f"c{c:02d}", "label": f"k{label}"})
    with open(tmp_path / "cohort.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""[cohort]\ncsv = "{tmp_path / 'cohort.csv'}"\nfeatures_dir = "{tmp_path / 'f'}"\nbag = "case"
val_fraction = 0.25\ntest_fraction = 0.25\n[aggregator]\nname = "abmil"\nembed_dim = 16\nattn_dim = 8
[head]\nname = "classification"\nn_boot = 0\n[train]\nepochs = 3\nlr = 1e-3\n""")
    out = run_recipe(validate_recipe(load_recipe(recipe), registries), registries, out=tmp_path / "run", progress=False)
    parts = json.loads((out / "splits.json").read_text())["folds"][0]
    ids = [i for part in parts.values() for i in part]
    assert sorted(ids) == [f"c{c:02d}" for c in range(24)]                 # case ids, each once
    preds = list(csv.DictReader(open(out / "predictions.csv")))
    assert {p["slide_id"] for p in preds} <= set(ids) and all(p["slide_id"].startswith("c") for p in preds)
    assert all("-" not in p["slide_id"] for p in preds)
    assert json.loads((out / "cases.json").read_text())["c00"] == ["c00-0", "c00-1"]
    drawn = sorted(p.stem for p in (out / "plots" / "heatmaps").glob("*.png") if "tiles" not in p.stem)
    assert drawn and all("-" in name for name in drawn)                    # one heatmap per slide of a case


def test_patient_level_report_generation_writes_one_report_per_case(tmp_path: Path, registries) -> None:
    """Case-level reports: a two-slide patient's slides form one bag and get one generated report."""
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe

    rng = np.random.default_rng(1)
    (tmp_path / "f").mkdir()
    rows = []
    for c in range(20):
        kind = ("squamous", "adeno")[c % 2]
        for s in range(1 + (c % 4 == 0)):                                  # every fourth patient has two slides
            sid = f"p{c:02d}-{s}"
            feats = rng.normal(size=(int(rng.integers(4, 10)), 8)).astype("float32")
            feats[:, c % 2] += 3
            with h5py.File(tmp_path / "f" / f"{sid}.h5", "w") as f:
                f["features"] = feats
                f["coords"] = np.stack([224 * np.arange(len(feats)), np.zeros(len(feats))], 1)
            rows.append({"slide_id": sid, "case_id": f"p{c:02d}", "report": f"{kind} carcinoma . grade {c % 3 + 1} ."})
    with open(tmp_path / "cohort.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""[cohort]\ncsv = "{tmp_path / 'cohort.csv'}"\nfeatures_dir = "{tmp_path / 'f'}"\nbag = "case"
val_fraction = 0.2\ntest_fraction = 0.25\n[aggregator]\nname = "mean"\nembed_dim = 8
[head]\nname = "retrieval"\nobjective = "none"\nproj_dim = 0\nfindings_vocabulary = "none"\n[train]\nepochs = 1
batch_size = 4\n""")
    out = run_recipe(validate_recipe(load_recipe(recipe), registries), registries, out=tmp_path / "run", progress=False)
    preds = list(csv.DictReader(open(out / "predictions.csv")))
    assert preds and all("-" not in p["slide_id"] for p in preds)                 # one row per patient
    assert len({(p["slide_id"], p["split"]) for p in preds}) == len(preds)
    reports = {r["report"] for r in rows}
    assert all(p["generated"] in reports and "-" not in p["neighbours"] for p in preds)  # a patient's report
    cases = json.loads((out / "cases.json").read_text())
    assert cases["p00"] == ["p00-0", "p00-1"] and cases["p01"] == ["p01-0"]
