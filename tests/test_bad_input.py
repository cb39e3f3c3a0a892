"""Property-based: recipes, cohort tables and feature files with random defects never cost a traceback,
a wrong answer or other work. Each example runs the real CLI (``milkit.cli.main``) and checks the exit
code (0, 1 or 2), that no traceback is printed, that the message names the defective item, and that no
file outside the output folder changed."""

import csv
import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from milkit import cli

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

BASE = {
    "run": {"name": '"bad-input"', "seed": "1"},
    "cohort": {"csv": '"cohort.csv"', "val_fraction": "0.25", "test_fraction": "0.25"},
    "aggregator": {"name": '"mean"', "embed_dim": "8"},
    "head": {"name": '"classification"', "n_boot": "0"},
    "train": {"epochs": "1", "batch_size": "4"},
}


def _toml(tables: dict[str, dict[str, str]]) -> str:
    return "".join(f"[{t}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n" for t, keys in tables.items())


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and skip not in p.parents}


def _cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.err + out.out


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("milkit_tests_root_conftest", Path(__file__).parent / "conftest.py")
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    return root.write_synthetic_cohort(tmp_path_factory.mktemp("clean") / "cohort", n_slides=16).parent


def _fresh(cohort_dir: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("case")
    shutil.copytree(cohort_dir, root / "cohort")
    return root


RECIPE_DEFECTS = st.sampled_from([
    ("table", "traing", None, None, "[traing]"),                                 # misspelt table
    ("key", "train", "epoch", "3", "epoch"),                                     # misspelt key
    ("key", "aggregator", "embed_dimm", "8", "embed_dimm"),                      # a component's key
    ("value", "train", "epochs", '"ten"', "epochs"),                             # wrong type
    ("value", "train", "epochs", "0", "epochs"),                                 # out of range
    ("value", "train", "lr", "-1.0", "lr"),
    ("value", "cohort", "val_fraction", "0.75", "val_fraction"),                 # val + test >= 0.95
    ("value", "cohort", "stratify", '"grade"', "grade"),                         # no such column
    ("value", "cohort", "csv", '"missing.csv"', "missing.csv"),                  # no such file
    ("value", "aggregator", "name", '"abmill"', "abmill"),                       # unknown component
    ("value", "head", "name", '"survival"', "survival"),
    ("value", "run", "device", '"cuda"', "device"),                              # no CUDA here
    ("value", "run", "threads", "0", "threads"),
    ("value", "run", "output_dir", '"cohort.csv"', "output_dir"),               # a file, not a folder
    ("drop", "head", None, None, "[head]"),                                      # missing table
    ("syntax", None, None, None, "TOML"),                                        # not TOML
])


@SETTINGS
@given(defect=RECIPE_DEFECTS, second=RECIPE_DEFECTS)
def test_recipe_defects_are_usage_errors_naming_the_item(defect, second, cohort_dir, tmp_path_factory, capsys):
    import torch

    if defect[2] == "device" and torch.cuda.is_available():
        return
    root = _fresh(cohort_dir, tmp_path_factory)
    tables = {t: dict(k) for t, k in BASE.items()}
    for kind, table, key, value, _ in (defect, second):
        if kind == "table":
            tables[table] = {"x": "1"}
        elif kind in ("key", "value"):
            tables[table][key] = value
        elif kind == "drop":
            tables.pop(table, None)
    text = _toml(tables) + ("epochs = = 3\n" if "syntax" in (defect[0], second[0]) else "")
    recipe = root / "cohort" / "recipe.toml"
    recipe.write_text(text)
    before = _snapshot(root, root / "out")
    code, message = _cli(["run", str(recipe), "--out", str(root / "out"), "--quiet"], capsys)
    assert code == 2, message
    assert "Traceback" not in message
    bad_line = len(text.splitlines())
    names = [f"recipe.toml:{bad_line}: TOML syntax error"] if "syntax" in (defect[0], second[0]) else [defect[4], second[4]]
    for a, b in ((defect, second), (second, defect)):
        hides = a[0] == "drop" and b[1] == a[1] or a[2] == "name" and b[1] == a[1] and b[2] != "name"
        if hides and b[4] in names:  # an unknown or missing component hides checks of its own keys
            names.remove(b[4])
    for named in names:
        assert named in message, (named, message)
    assert _snapshot(root, root / "out") == before
    assert not (root / "out" / "metrics.json").exists()


COHORT_DEFECTS = st.sampled_from([
    ("no slide_id column", "slide_id"),
    ("duplicate slide_id", "repeated"),
    ("empty label", "label"),
    ("one class", "one class"),
    ("not utf-8", "cohort.csv"),
    ("empty file", "cohort.csv"),
    ("one patient", "patient"),
])


def _spoil_cohort(path: Path, defect: str) -> None:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if defect == "not utf-8":
        path.write_bytes(b"slide_id,label\n\xff\xfe\x00bad,\x80\n")
        return
    if defect == "empty file":
        path.write_text("")
        return
    if defect == "no slide_id column":
        rows = [{("slide" if k == "slide_id" else k): v for k, v in r.items()} for r in rows]
    elif defect == "duplicate slide_id":
        rows[3]["slide_id"] = rows[2]["slide_id"]
    elif defect == "empty label":
        rows[5]["label"] = ""
    elif defect == "one class":
        for r in rows:
            r["label"] = "class0"
    elif defect == "one patient":
        for r in rows:
            r["case_id"] = "same-patient"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@SETTINGS
@given(defect=COHORT_DEFECTS)
def test_cohort_defects_are_one_message_naming_the_item(defect, cohort_dir, tmp_path_factory, capsys):
    root = _fresh(cohort_dir, tmp_path_factory)
    _spoil_cohort(root / "cohort" / "cohort.csv", defect[0])
    recipe = root / "cohort" / "recipe.toml"
    recipe.write_text(_toml(BASE))
    before = _snapshot(root, root / "out")
    code, message = _cli(["run", str(recipe), "--out", str(root / "out"), "--quiet"], capsys)
    assert code in (1, 2), message
    assert "Traceback" not in message and defect[1] in message, (defect, message)
    assert _snapshot(root, root / "out") == before


def _spoil_bag(path: Path, defect: str) -> None:
    if defect == "garbage":
        path.write_bytes(b"\x00" * 64)
        return
    if defect == "empty":
        path.write_bytes(b"")
        return
    with h5py.File(path, "r") as f:
        feats = f["features"][()]
    data = {"nan": np.where(np.arange(feats.size).reshape(feats.shape) == 3, np.nan, feats),
            "inf": np.full_like(feats, np.inf), "no patches": feats[:0], "1-d": feats[0],
            "3-d": feats[None], "wider": np.ones((feats.shape[0], feats.shape[1] + 3), "float32"),
            "no features": None}[defect]
    path.unlink()
    with h5py.File(path, "w") as f:
        if data is None:
            f["something_else"] = np.zeros(3)
        else:
            f["features"] = data.astype("float32")


BAG_DEFECTS = st.lists(st.sampled_from(["nan", "inf", "no patches", "1-d", "3-d", "wider", "no features",
                                        "garbage", "empty"]), min_size=1, max_size=3)


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(defects=BAG_DEFECTS, strict=st.booleans())
def test_bad_bags_cost_only_themselves(defects, strict, cohort_dir, tmp_path_factory, capsys):
    import json

    root = _fresh(cohort_dir, tmp_path_factory)
    spoilt = [f"s{i:03d}" for i in range(len(defects))]
    for sid, defect in zip(spoilt, defects):
        _spoil_bag(root / "cohort" / "features" / f"{sid}.h5", defect)
    tables = {t: dict(k) for t, k in BASE.items()}
    tables["cohort"]["strict"] = "true" if strict else "false"
    recipe = root / "cohort" / "recipe.toml"
    recipe.write_text(_toml(tables))
    before = _snapshot(root, root / "out")
    code, message = _cli(["run", str(recipe), "--out", str(root / "out"), "--quiet"], capsys)
    assert "Traceback" not in message
    if strict:
        assert code == 1 and "strict" in message and any(s in message for s in spoilt), message
    else:
        assert code == 0, message
        excluded = {e["slide_id"] for e in json.loads((root / "out" / "metrics.json").read_text())["excluded_slides"]}
        assert excluded == set(spoilt) and all(s in message for s in spoilt)
    assert _snapshot(root, root / "out") == before
