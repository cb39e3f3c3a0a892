"""Demo cohort plan: balanced subtypes, two-slide cases, slide sizes and tumour content."""

from collections import Counter

import pytest

from milkit.demo.plan import TILE_AREA, plan_cohort
from milkit.demo.tissue import SUBTYPES


@pytest.mark.parametrize("n", [1, 2, 5, 12, 60, 61])
def test_slide_count_and_balance(n: int) -> None:
    slides = [(case, s) for case in plan_cohort(n, 0) for s in case.slides]
    assert len(slides) == n
    counts = Counter(s.subtype for _, s in slides)
    assert set(counts) <= set(SUBTYPES) and max(counts.values()) - min(counts.get(k, 0) for k in SUBTYPES) <= 1
    assert len({s.slide_id for _, s in slides}) == n
    assert all(s.slide_id.startswith(case.case_id) and s.subtype == case.subtype for case, s in slides)


def test_default_plan_has_two_slide_cases_and_sized_slides() -> None:
    cases = plan_cohort(60, 0)
    doubles = [c for c in cases if len(c.slides) == 2]
    assert len(cases) == 52 and len(doubles) == 8  # ~15% of patients contribute two slides
    for case in cases:
        for s in case.slides:
            assert 2000 <= s.height <= 3500 and 2000 <= s.width <= 3500
            assert 30 <= s.coverage * s.height * s.width / TILE_AREA <= 110  # tissue area in 224-px tiles
            assert s.target["tumour"] >= 0.38 and sum(s.target.values()) == pytest.approx(1.0)
            assert min(s.target.values()) >= 0 and s.target["stroma"] >= 0.079


def test_plan_is_deterministic_per_seed() -> None:
    assert plan_cohort(30, 4) == plan_cohort(30, 4)
    assert plan_cohort(30, 4) != plan_cohort(30, 5)


def test_fixed_slide_size() -> None:
    assert {(s.height, s.width) for c in plan_cohort(9, 0, slide_size=256) for s in c.slides} == {(256, 256)}
