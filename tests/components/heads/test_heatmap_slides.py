"""Each head picks its own telling slides for the run's attention heatmaps."""

from milkit.components.heads.classification import Classification
from milkit.components.heads.cox import CoxSurvival
from milkit.head import Head


def test_classification_picks_the_most_confident_slide_of_each_class():
    records = [{"slide_id": f"s{i}", "target": "a", "pred": p, "prob_a": pa, "prob_b": 1 - pa}
               for i, (p, pa) in enumerate([("a", 0.9), ("a", 0.95), ("b", 0.3), ("b", 0.1), ("a", 0.6)])]
    assert [s for s, _ in Classification.heatmap_slides(records, 3)] == ["s1", "s3", "s0"]


def test_cox_picks_the_risk_extremes_and_the_median():
    records = [{"slide_id": f"s{i}", "risk": r, "time": 1.0, "event": 1} for i, r in enumerate([0.1, 2.0, -1.0, 0.5])]
    picked = CoxSurvival.heatmap_slides(records, 3)
    assert [s for s, _ in picked] == ["s1", "s0", "s2"] and "highest" in picked[0][1] and "lowest" in picked[2][1]


def test_the_default_is_evenly_spaced_and_at_most_n():
    records = [{"slide_id": f"s{i:02d}"} for i in range(10)]
    assert [s for s, _ in Head.heatmap_slides(records, 3)] == ["s00", "s03", "s06"]
    assert len(Head.heatmap_slides(records[:2], 3)) == 2
