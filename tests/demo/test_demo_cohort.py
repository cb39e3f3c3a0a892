"""The demo cohort on disk: columns, survival, reports, patient grouping, determinism, learnability."""

import csv
import json
from pathlib import Path

import numpy as np
import openslide
import pytest

from milkit.demo import COHORT_COLUMNS, SUBTYPES, make_demo_cohort
from milkit.demo.cohort import is_complete, log_hazard, survival
from milkit.errors import DataError


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_cohort_columns_and_types(small_demo: Path) -> None:
    rows = read(small_demo)
    assert list(rows[0]) == list(COHORT_COLUMNS) and len(rows) == 18
    for r in rows:
        assert (small_demo.parent / r["slide_path"]).is_file() and not Path(r["slide_path"]).is_absolute()
        assert r["label"] in SUBTYPES
        assert float(r["time"]) > 0 and r["event"] in {"0", "1"}
    assert sorted(r["label"] for r in rows) == sorted(list(SUBTYPES) * 6)


def test_slides_of_a_case_share_label_outcome_and_report(small_demo: Path) -> None:
    rows = read(small_demo)
    by_case: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], []).append(r)
    assert any(len(v) == 2 for v in by_case.values()) and max(len(v) for v in by_case.values()) == 2
    for case_rows in by_case.values():
        assert len({(r["label"], r["time"], r["event"], r["report"]) for r in case_rows}) == 1


def test_reports_differ_and_mention_the_subtype(small_demo: Path) -> None:
    rows = read(small_demo)
    reports = {r["case_id"]: r["report"] for r in rows}
    assert len(set(reports.values())) == len(reports)
    words = {"adenocarcinoma": "adenocarcinoma", "squamous": "squamous", "small_cell": "small cell"}
    for r in rows:
        assert 25 <= len(r["report"].split()) <= 60 and words[r["label"]] in r["report"]


def test_slide_level_targets_are_what_the_slide_shows(small_demo: Path) -> None:
    """tumour_fraction, necrosis and til come from each slide's own measured composition."""
    comp = {c["slide_id"]: c for c in read(small_demo.parent / "composition.csv")}
    rows = read(small_demo)
    for r in rows:
        c = comp[r["slide_id"]]
        assert r["tumour_fraction"] == c["tumour"] and 0.0 <= float(r["tumour_fraction"]) <= 1.0
        assert r["necrosis"] == ("present" if float(c["necrosis"]) >= 0.01 else "absent")
        lym = float(c["lymphocytes"])
        assert r["til"] == ("mild" if lym < 0.05 else "moderate" if lym < 0.12 else "brisk")
    assert {r["necrosis"] for r in rows} == {"absent", "present"} and len({r["til"] for r in rows}) >= 2
    assert len({r["tumour_fraction"] for r in rows}) == len(rows)            # continuous: no repeats


def test_composition_ground_truth(small_demo: Path) -> None:
    comp = read(small_demo.parent / "composition.csv")
    assert [c["slide_id"] for c in comp] == [r["slide_id"] for r in read(small_demo)]
    for c in comp:
        fractions = [float(c[k]) for k in ("tumour", "stroma", "lymphocytes", "necrosis", "fat")]
        assert sum(fractions) == pytest.approx(1.0, abs=1e-3) and float(c["tumour"]) >= 0.3
        assert (int(c["width"]), int(c["height"]), float(c["mpp"])) == (512, 512, 0.5)


def test_marker_records_the_arguments(small_demo: Path) -> None:
    marker = json.loads((small_demo.parent / ".complete").read_text())
    assert marker == {"version": "demo-v3", "n_slides": 18, "seed": 3, "slide_size": 512}
    assert is_complete(small_demo.parent, n_slides=18, seed=3, slide_size=512)
    assert not is_complete(small_demo.parent)  # not the default demo


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    paths = [
        make_demo_cohort(tmp_path / name, n_slides=2, seed=7, slide_size=384, workers=w, progress=False)
        for name, w in (("a", 1), ("b", 1), ("c", 2))
    ]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 5  # two slides, two CSVs, the marker
    for f in files:
        data = (tmp_path / "a" / f).read_bytes()
        assert data == (tmp_path / "b" / f).read_bytes() == (tmp_path / "c" / f).read_bytes(), f
    other = make_demo_cohort(tmp_path / "d", n_slides=2, seed=8, slide_size=384, workers=1, progress=False)
    assert other.read_bytes() != paths[0].read_bytes()


def test_interrupted_generation_has_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_demo_cohort(tmp_path, n_slides=1, slide_size=256, workers=1, progress=False)
    assert (tmp_path / ".complete").exists()

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("milkit.demo.cohort._write_csv", boom)
    with pytest.raises(KeyboardInterrupt):
        make_demo_cohort(tmp_path, n_slides=1, slide_size=256, workers=1, progress=False)
    assert not (tmp_path / ".complete").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_rejects_empty_cohort(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least 1 slide"):
        make_demo_cohort(tmp_path, n_slides=0)


def test_survival_censoring_and_risk_ordering() -> None:
    rng = np.random.default_rng(0)
    risk = rng.normal(0, 1, 3000)
    time, event = survival(rng, risk)
    assert (time > 0).all() and set(np.unique(event).tolist()) == {0, 1}
    assert event.mean() == pytest.approx(0.7, abs=0.001)
    high, low = time[(risk > 1) & (event == 1)], time[(risk < -1) & (event == 1)]
    assert np.median(high) < 0.5 * np.median(low)
    base = {"tumour": 0.5, "stroma": 0.3, "lymphocytes": 0.1, "necrosis": 0.1, "fat": 0.0}
    assert log_hazard("small_cell", base) > log_hazard("squamous", base) > log_hazard("adenocarcinoma", base)
    assert log_hazard("squamous", base | {"necrosis": 0.2}) > log_hazard("squamous", base)
    assert log_hazard("squamous", base | {"lymphocytes": 0.2}) < log_hazard("squamous", base)


def test_subtype_is_recoverable_from_tissue_colour(small_demo: Path) -> None:
    """Leave-one-out nearest centroid on the mean RGB of tissue pixels (OpenSlide, level 1)."""
    rows = read(small_demo)
    feats, labels = [], []
    for r in rows:
        with openslide.OpenSlide(small_demo.parent / r["slide_path"]) as slide:
            rgb = np.asarray(slide.read_region((0, 0), 1, slide.level_dimensions[1]).convert("RGB"), dtype=float)
        tissue = rgb.reshape(-1, 3)[(rgb.max(axis=2) - rgb.min(axis=2)).ravel() > 25]  # saturated = stained
        feats.append(tissue.mean(axis=0))
        labels.append(r["label"])
    x, y = np.array(feats), np.array(labels)
    correct = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        centroids = {c: x[keep & (y == c)].mean(axis=0) for c in SUBTYPES}
        correct += min(centroids, key=lambda c: np.linalg.norm(x[i] - centroids[c])) == y[i]
    assert correct / len(y) >= 0.8
