"""Patient-level splits: disjoint by case_id, stratified, deterministic."""

import pytest

from milkit.data.splits import check_disjoint, make_splits
from milkit.errors import DataError


def rows(n=60):
    return [{"slide_id": f"s{i}", "case_id": f"c{i // 2}", "label": f"k{(i // 2) % 3}"} for i in range(n)]


@pytest.mark.parametrize("mode", ["holdout", "kfold"])
def test_splits_are_patient_disjoint_and_cover(mode):
    data = rows()
    splits = make_splits(data, mode=mode, seed=1, folds=4, val_fraction=0.2, test_fraction=0.25, stratify="label")
    case = {r["slide_id"]: r["case_id"] for r in data}
    for split in splits:
        parts = [{case[s] for s in split[p]} for p in ("train", "val", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert sorted(split["train"] + split["val"] + split["test"]) == sorted(case)
        assert {r["label"] for r in data if r["slide_id"] in split["test"]} == {"k0", "k1", "k2"}
    if mode == "kfold":
        tests = [s for split in splits for s in split["test"]]
        assert len(splits) == 4 and sorted(tests) == sorted(case)  # test sets partition the cohort


def test_splits_deterministic_per_seed():
    a = make_splits(rows(), mode="holdout", seed=3, stratify="label")
    assert a == make_splits(rows(), mode="holdout", seed=3, stratify="label")
    assert a != make_splits(rows(), mode="holdout", seed=4, stratify="label")


def test_check_disjoint_names_the_patient():
    data = rows(4)
    with pytest.raises(DataError, match="patient c0 is in both train and test"):
        check_disjoint([{"train": ["s0"], "val": [], "test": ["s1"]}], data)
