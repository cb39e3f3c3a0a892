"""Plan a demo cohort: cases, their subtype, slides per case, slide sizes and target compositions.

All randomness comes from ``seed``; the plan fixes every slide's own seed, so slides can be
rendered in any order or process and still come out identical.
"""

from dataclasses import dataclass

import numpy as np

from milkit.demo.slides import SlidePlan
from milkit.demo.tissue import SUBTYPES

DOUBLE_SLIDE_FRACTION = 0.15
"""Fraction of cases with two slides (so that splits must be made per patient)."""
TILE_AREA = 224 * 224
"""Level-0 area of one extraction tile at 0.5 µm/px; tissue is sized in tiles."""
NECROSIS_RATE = {"adenocarcinoma": 0.35, "squamous": 0.5, "small_cell": 0.75}


@dataclass(frozen=True)
class CasePlan:
    """One patient: subtype, patient-level tendencies, and its slides."""

    case_id: str
    subtype: str
    necrotic: bool
    lymphocyte_level: int  # 0 mild, 1 moderate, 2 brisk
    slides: tuple[SlidePlan, ...]


def _slide_counts(n_slides: int) -> list[tuple[str, int]]:
    """(subtype, slides in case) for every case; slide counts per subtype differ by at most one."""
    per_class = [n_slides // 3 + (k < n_slides % 3) for k in range(3)]
    n_double = round(DOUBLE_SLIDE_FRACTION * n_slides / (1 + DOUBLE_SLIDE_FRACTION))
    doubles = [0, 0, 0]
    for i in range(n_double):
        k = i % 3
        if 2 * (doubles[k] + 1) <= per_class[k]:
            doubles[k] += 1
    cases = []
    for k, subtype in enumerate(SUBTYPES):
        cases += [(subtype, 2)] * doubles[k] + [(subtype, 1)] * (per_class[k] - 2 * doubles[k])
    return cases


def _target(rng: np.random.Generator, necrotic: bool, lymph_level: int) -> dict[str, float]:
    """A slide's wanted composition; tumour is always at least ~38% of the tissue."""
    tumour = rng.uniform(0.38, 0.78)
    necrosis = rng.uniform(0.04, 0.2) if necrotic else 0.0
    lymph = rng.uniform(*[(0.01, 0.045), (0.06, 0.11), (0.13, 0.22)][lymph_level])
    fat = rng.uniform(0.02, 0.12) if rng.random() < 0.5 else 0.0
    others = necrosis + lymph + fat
    room = 0.92 - tumour  # stroma gets at least 8%
    if others > room:
        necrosis, lymph, fat = (x * room / others for x in (necrosis, lymph, fat))
    stroma = 1.0 - tumour - necrosis - lymph - fat
    return {"tumour": tumour, "stroma": stroma, "lymphocytes": lymph, "necrosis": necrosis, "fat": fat}


def plan_cohort(n_slides: int, seed: int, *, slide_size: int | None = None) -> list[CasePlan]:
    """Plan ``n_slides`` slides over cases with balanced subtypes.

    Args:
        n_slides: Number of slides (≥ 1; every subtype appears from 3 on).
        seed: Cohort seed.
        slide_size: Fixed level-0 side in pixels (for fast tests); default: 2,000-3,500 px
            per side, sized so a slide holds ~40-115 tissue tiles of 224 px.

    Returns:
        Cases in case-id order; slide ids are ``<case_id>-A``, ``<case_id>-B``.
    """
    rng = np.random.default_rng([seed, 0])
    counts = _slide_counts(n_slides)
    order = rng.permutation(len(counts))
    cases = []
    slide_index = 0
    for number, i in enumerate(order, start=1):
        subtype, n = counts[i]
        case_id = f"DEMO-{number:03d}"
        necrotic = bool(rng.random() < NECROSIS_RATE[subtype])
        lymph_level = int(rng.integers(3))
        slides = []
        for letter in "AB"[:n]:
            if slide_size is None:  # size the tissue in 224-px tiles, then the glass around it
                tissue = rng.uniform(35, 100) * TILE_AREA
                area, aspect = tissue / rng.uniform(0.28, 0.45), rng.uniform(0.75, 1.33)
                height = int(np.clip(np.sqrt(area * aspect), 2000, 3500))
                width = int(np.clip(np.sqrt(area / aspect), 2000, 3500))
                coverage = float(np.clip(tissue / (height * width), 0.15, 0.55))
            else:
                height = width = slide_size
                coverage = float(rng.uniform(0.3, 0.5))
            target = _target(rng, necrotic, lymph_level)
            slides.append(
                SlidePlan(f"{case_id}-{letter}", subtype, height, width, coverage, target, (seed, 1, slide_index))
            )
            slide_index += 1
        cases.append(CasePlan(case_id, subtype, necrotic, lymph_level, tuple(slides)))
    return cases
