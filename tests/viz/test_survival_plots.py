"""Kaplan-Meier and calibration plots: valid PNGs, log-rank p-values, calibration groups."""

import math
from pathlib import Path

import numpy as np
from PIL import Image

from milkit.viz.survival_plots import plot_calibration, plot_km_by_risk

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000  # curves, text and axes, not a blank canvas
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert min(im.size) >= 300 and len(set(np.asarray(im.convert("L")).ravel().tolist())) > 10


def test_km_by_risk_writes_png_and_separates_groups(tmp_path: Path, survival_records) -> None:
    train, test = survival_records(200, 0), survival_records(80, 1)
    threshold = float(np.median([r["risk"] for r in train]))
    p = plot_km_by_risk(test, threshold, tmp_path / "sub" / "km.png")
    assert_png(tmp_path / "sub" / "km.png")
    assert 0.0 <= p < 1e-4
    p_random = plot_km_by_risk([dict(r, risk=float(i % 2)) for i, r in enumerate(test)], 0.5, tmp_path / "r.png")
    assert p_random > 0.01


def test_km_with_one_empty_group_still_plots(tmp_path: Path, survival_records) -> None:
    p = plot_km_by_risk(survival_records(30, 1), threshold=1e9, path=tmp_path / "km.png")
    assert math.isnan(p)
    assert_png(tmp_path / "km.png")


def test_calibration_groups_by_risk_quantile(tmp_path: Path, survival_records) -> None:
    train, test = survival_records(300, 0, strength=1.0), survival_records(200, 1, strength=1.0)
    rows = plot_calibration(test, train, horizon=0.5, path=tmp_path / "cal.png", n_groups=4)
    assert_png(tmp_path / "cal.png")
    assert [r["group"] for r in rows] == [1, 2, 3, 4] and sum(r["n"] for r in rows) == 200
    predicted = [r["predicted"] for r in rows]
    observed = [r["observed"] for r in rows]
    assert predicted == sorted(predicted, reverse=True)  # higher-risk groups: lower predicted survival
    assert observed[0] > observed[-1]
    assert max(abs(a - b) for a, b in zip(predicted, observed)) < 0.2  # same generating process: calibrated
