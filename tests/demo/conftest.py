"""A small demo cohort generated once per test session (18 slides of 512 px, about a second)."""

from pathlib import Path

import pytest

from milkit.demo import make_demo_cohort


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cohort.csv`` of an 18-slide, 512-px demo cohort (seed 3, rendered in-process)."""
    out = tmp_path_factory.mktemp("demo")
    return make_demo_cohort(out, n_slides=18, seed=3, slide_size=512, workers=1, progress=False)
