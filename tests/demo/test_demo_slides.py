"""Demo slides: pyramidal tiled TIFFs that OpenSlide reads with the right levels, mpp and pixels."""

from pathlib import Path

import numpy as np
import openslide
import pytest

from milkit.demo.slides import DOWNSAMPLE, N_LEVELS, SlidePlan, render_slide, synthesise_slide, write_pyramid
from milkit.demo.tissue import PALETTE, Tissue

TARGET = {"tumour": 0.5, "stroma": 0.2, "lymphocytes": 0.1, "necrosis": 0.1, "fat": 0.1}


def plan(subtype: str = "adenocarcinoma", size: int = 768, seed: int = 0) -> SlidePlan:
    return SlidePlan("s", subtype, size, size + 64, 0.4, TARGET, (seed,))


def test_openslide_reads_levels_and_mpp(tmp_path: Path) -> None:
    path = tmp_path / "s.tiff"
    synthesise_slide(plan(), path)
    with openslide.OpenSlide(path) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.level_count == N_LEVELS >= 3
        assert slide.dimensions == (832, 768)
        assert slide.level_dimensions[1] == (832 // DOWNSAMPLE, 768 // DOWNSAMPLE)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)
        corner = np.asarray(slide.read_region((0, 0), 0, (64, 64)).convert("RGB"), dtype=float)
    # the slide corner is glass: light, nearly grey
    assert corner.mean() > 225 and np.ptp(corner.mean(axis=(0, 1))) < 8
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_jpeg_level0_matches_rendered_pixels(tmp_path: Path) -> None:
    image, _ = render_slide(plan(seed=1))
    write_pyramid(tmp_path / "s.tiff", image)
    with openslide.OpenSlide(tmp_path / "s.tiff") as slide:
        read = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"), dtype=float)
    assert read.shape == image.shape
    assert np.abs(read - image).mean() < 6  # lossy JPEG, same picture


def test_render_is_deterministic_and_seed_dependent() -> None:
    a, comp_a = render_slide(plan(seed=5))
    b, comp_b = render_slide(plan(seed=5))
    c, _ = render_slide(plan(seed=6))
    assert np.array_equal(a, b) and comp_a == comp_b
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("subtype", ["adenocarcinoma", "squamous", "small_cell"])
def test_composition_follows_target(subtype: str) -> None:
    _, comp = render_slide(plan(subtype, size=1024))
    assert sum(comp.values()) == pytest.approx(1.0)
    for key, want in TARGET.items():
        assert comp[key] == pytest.approx(want, abs=0.05), key


def test_tissue_is_coloured_and_glass_is_not() -> None:
    image, _ = render_slide(plan("small_cell", size=1024))
    glass = PALETTE[Tissue.BACKGROUND]
    far_from_glass = np.abs(image.astype(float) - glass).sum(axis=2) > 60
    assert 0.15 < far_from_glass.mean() < 0.6  # coverage 0.4, minus pale fat and lumens
