"""Attention from a really trained run: scores per patch, heatmaps, and clear errors."""

import json

import numpy as np
import pytest
from vizhelpers import assert_sensible_png, train_run

from milkit.data.feature_formats import read_bag
from milkit.errors import DataError
from milkit.viz.attention import NoAttentionError, RunScorer, attention_aggregators, heatmap_for_run

pytestmark = pytest.mark.slow  # the session fixture trains a small model (a few seconds)


def test_scores_are_the_models_attention_over_every_patch(trained_run, session_registries):
    scorer = RunScorer(trained_run, registries=session_registries)
    s = scorer.scores("s005")
    bag = read_bag(trained_run.parent / "cohort" / "features" / "s005.h5")
    assert s.scores.shape == (len(bag.features),) and np.array_equal(s.coords, bag.coords)
    assert s.scores.sum() == pytest.approx(1.0, abs=1e-5) and (s.scores >= 0).all()  # ABMIL softmax
    assert s.aggregator == "abmil" and s.slide_path is None and s.patch_size_level0 is None


def test_heatmap_for_run_draws_the_top_patch_hot(trained_run, session_registries):
    res = heatmap_for_run(trained_run, "s005", registries=session_registries, width=400, top_k=2)
    assert res.png == trained_run / "heatmaps" / "s005.png"
    assert_sensible_png(res.png)
    x, y, _ = res.top[0]
    px = res.overlay[int((y + 112) * res.scale[1]), int((x + 112) * res.scale[0])].astype(int)
    assert px[0] - px[2] > 50, px                                          # percentile 1.0: red


def test_run_report_has_plots_and_three_heatmaps(trained_run):
    index = json.loads((trained_run / "plots" / "index.json").read_text())
    heatmaps = [i for i in index["items"] if i["section"] == "heatmaps"]
    assert len(heatmaps) == 3 and index["notes"] == []
    assert all("blank canvas" in h["caption"] for h in heatmaps)          # the synthetic cohort has no slides
    page = (trained_run / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 6             # curves, ROC, confusion + 3 heatmaps
    assert "viz &lt;test&gt; &amp; run" in page


def test_aggregator_without_attention_is_named(tmp_path, session_registries):
    run = train_run(tmp_path, session_registries, agg="mean", epochs=1)
    with pytest.raises(NoAttentionError, match=r"aggregator 'mean'.*expose scores: .*abmil"):
        heatmap_for_run(run, "s001", registries=session_registries)
    assert "mean" not in attention_aggregators(session_registries)


def test_unusable_inputs_name_what_to_do(trained_run, tmp_path, session_registries):
    with pytest.raises(DataError, match="not a milkit run dir"):
        RunScorer(tmp_path, registries=session_registries)
    with pytest.raises(DataError, match="fold 7 has no trained model; available: fold_0"):
        RunScorer(trained_run, fold=7, registries=session_registries)
    with pytest.raises(DataError, match="no feature file for slide 'nope'"):
        RunScorer(trained_run, registries=session_registries).scores("nope")


def test_slideflow_bags_without_mpp_are_placed_by_their_centres(trained_run, session_registries, tmp_path):
    import torch

    bag = read_bag(trained_run.parent / "cohort" / "features" / "s005.h5")
    torch.save(torch.from_numpy(bag.features), tmp_path / "s005.pt")
    np.savez(tmp_path / "s005.index.npz", bag.coords + 112)               # slideflow stores tile centres
    scorer = RunScorer(trained_run, registries=session_registries)
    reference = scorer.scores("s005")
    scorer.features_dir = tmp_path
    s = scorer.scores("s005")
    assert s.patch_size_level0 == 224                                       # the grid step
    np.testing.assert_array_equal(s.coords, bag.coords)                     # back to top-left corners
    np.testing.assert_allclose(s.scores, reference.scores, atol=1e-6)
