"""Individual plots: valid, sensibly sized, not blank; the report table scores each report."""

import json

import numpy as np
import pytest
from vizhelpers import assert_sensible_png

from milkit.viz.plots import plot_compare_curves, plot_confusion, plot_roc, plot_training_curves, report_table_rows


def test_training_curves(tmp_path):
    epochs = {k: [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e + k, "val_auc": 0.5 + e / 20}
                  for e in range(1, 8)] for k in range(2)}
    img = assert_sensible_png(plot_training_curves(epochs, "auc", tmp_path / "c.png", {0: 7, 1: 3}))
    assert img.shape[1] > 1.8 * img.shape[0]  # two panels side by side


def test_training_curves_without_validation_still_draw(tmp_path):
    epochs = {0: [{"epoch": e, "train_loss": 1 / e} for e in range(1, 4)]}
    assert_sensible_png(plot_training_curves(epochs, "auc", tmp_path / "c.png"))


def test_roc_and_confusion(tmp_path):
    rng = np.random.default_rng(0)
    y = [["a", "b", "c"][i % 3] for i in range(60)]
    probs = rng.dirichlet(np.ones(3), 60) + np.eye(3)[[i % 3 for i in range(60)]]
    probs /= probs.sum(1, keepdims=True)
    assert_sensible_png(plot_roc(y, probs, ["a", "b", "c"], tmp_path / "roc.png", title="t"))
    pred = [["a", "b", "c"][int(p.argmax())] for p in probs]
    assert_sensible_png(plot_confusion(y, pred, ["a", "b", "c"], tmp_path / "cm.png", title="t"))


def test_roc_with_a_single_class_is_a_labelled_empty_plot(tmp_path):
    assert_sensible_png(plot_roc(["a"] * 5, np.full((5, 2), 0.5), ["a", "b"], tmp_path / "roc.png", title="t"))


def test_report_table_rows_sample_and_scores():
    records = [{"slide_id": f"s{i:02d}", "generated": "invasive tumor of grade two" if i % 2 else "normal tissue",
                "reference": "invasive tumor of grade two"} for i in range(25)]
    rows = report_table_rows(records, n=10)
    assert len(rows) == 10 and rows == report_table_rows(records, n=10)          # deterministic sample
    assert [r["slide_id"] for r in rows] == sorted(r["slide_id"] for r in rows)
    for r in rows:
        exact = r["generated"] == r["reference"]
        assert (r["ROUGE_L"] == pytest.approx(1.0)) == exact and (r["BLEU_4"] > 0.5) == exact


def test_compare_curves(tmp_path):
    (tmp_path / "runs").mkdir()
    assert plot_compare_curves(tmp_path, "auc", tmp_path / "x.png") is None          # no logs yet
    for label in ("mean", "abmil"):
        for fold in range(2):
            d = tmp_path / "runs" / label / "seed_0" / f"fold_{fold}"
            d.mkdir(parents=True)
            d.joinpath("metrics.jsonl").write_text("".join(
                json.dumps({"epoch": e, "val_auc": 0.5 + e / 10 + fold / 20}) + "\n" for e in range(1, 5)))
    assert_sensible_png(plot_compare_curves(tmp_path, "auc", tmp_path / "cc.png"))
