"""A built-in synthetic cohort (slides, subtypes, survival, reports) so milkit runs with no download.

``make_demo_cohort(out_dir)`` writes one; ``demo_cohort()`` returns the cached default one.
See ``docs/demo.md``.
"""

from milkit.demo.cache import cache_root, demo_cohort
from milkit.demo.cohort import COHORT_COLUMNS, make_demo_cohort
from milkit.demo.tissue import SUBTYPES

__all__ = ["COHORT_COLUMNS", "SUBTYPES", "cache_root", "demo_cohort", "make_demo_cohort"]
