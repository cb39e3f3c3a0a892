"""Demo class layout: tissue coverage, fitted class fractions, smooth borders."""

import numpy as np
import pytest

from milkit.demo.tissue import (
    Tissue,
    class_scores,
    composition,
    smooth_border,
    smooth_field,
    tissue_field,
    upsample_labels,
)


def test_smooth_field_is_standardised_and_correlated() -> None:
    field = smooth_field(np.random.default_rng(0), (200, 300), sigma=10)
    assert field.shape == (200, 300) and field.dtype == np.float32
    assert field.mean() == pytest.approx(0, abs=1e-4) and field.std() == pytest.approx(1, abs=1e-3)
    neighbour = np.corrcoef(field[:, :-1].ravel(), field[:, 1:].ravel())[0, 1]
    assert neighbour > 0.9  # smooth, not white noise


@pytest.mark.parametrize("coverage", [0.2, 0.35, 0.5])
def test_tissue_field_coverage_and_margin(coverage: float) -> None:
    field = tissue_field(np.random.default_rng(1), (300, 260), coverage)
    tissue = field > 0
    assert tissue.mean() == pytest.approx(coverage, abs=0.06)
    assert not tissue[0].any() and not tissue[-1].any() and not tissue[:, 0].any() and not tissue[:, -1].any()


def test_class_fractions_match_target_and_only_named_classes_appear() -> None:
    rng = np.random.default_rng(2)
    field = tissue_field(rng, (300, 300), 0.4)
    target = {"tumour": 0.55, "stroma": 0.25, "lymphocytes": 0.12, "necrosis": 0.0, "fat": 0.08}
    scores = class_scores(rng, field, Tissue.TUMOUR_SQUAMOUS, target)
    labels = np.argmax(scores, axis=0)
    assert np.array_equal(labels == Tissue.BACKGROUND, field <= 0)
    present = set(np.unique(labels).tolist())
    assert present == {Tissue.BACKGROUND, Tissue.TUMOUR_SQUAMOUS, Tissue.STROMA, Tissue.LYMPHOCYTES, Tissue.FAT}
    got = composition(labels.astype(np.uint8), Tissue.TUMOUR_SQUAMOUS)
    for key, want in target.items():
        assert got[key] == pytest.approx(want, abs=0.02), key


def test_upsampled_map_keeps_fractions_and_smooth_border_follows_field() -> None:
    rng = np.random.default_rng(3)
    field = tissue_field(rng, (100, 120), 0.4)
    target = {"tumour": 0.6, "stroma": 0.2, "lymphocytes": 0.1, "necrosis": 0.1, "fat": 0.0}
    scores = class_scores(rng, field, Tissue.TUMOUR_ADENO, target)
    labels, coarse = upsample_labels(scores, (800, 960))
    assert labels.shape == (800, 960) and coarse.shape == (200, 240) and labels.dtype == np.uint8
    smooth = smooth_border(labels, field)
    assert (smooth == Tissue.BACKGROUND).mean() == pytest.approx((labels == Tissue.BACKGROUND).mean(), abs=0.01)
    assert set(np.unique(smooth).tolist()) <= set(np.unique(labels).tolist())
    comp = composition(coarse, Tissue.TUMOUR_ADENO)
    assert comp["tumour"] == pytest.approx(0.6, abs=0.03) and comp["fat"] == 0.0
