"""Fixtures for extraction tests: a synthetic slide."""

from pathlib import Path

import pytest
from synthetic_slides import make_slide


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 1024 x 768 synthetic slide at 0.5 um/px, 3 levels (shared; treat as read-only)."""
    return make_slide(tmp_path_factory.mktemp("slides") / "synth-a.tiff")


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three synthetic slides of different sizes (one .ome.tiff name, one 2-level pyramid)."""
    d = tmp_path_factory.mktemp("cohort")
    return [make_slide(d / "s1.tiff", seed=1), make_slide(d / "s2.ome.tiff", size=(768, 640), seed=2),
            make_slide(d / "s3.tiff", size=(640, 640), seed=3, levels=2)]
