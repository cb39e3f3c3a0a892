"""``[cohort] demo = true``: the built-in synthetic cohort, generated on first use, as a cohort format."""

from pathlib import Path

from milkit.cohort_format import CohortFormat
from milkit.data.cohort import Cohort, load_cohort_csv


class DemoCohort(CohortFormat):
    """The cached default demo (60 slides); its features come from the weight-free ``color-texture``."""

    name = "demo"
    key = "demo"
    value = "flag"
    description = "the built-in synthetic cohort (60 slides; subtypes, survival, reports), generated on first use"
    default_extractor = "color-texture"

    def load(self, value: Path | bool, *, slides_dir: Path | None = None) -> Cohort:
        from milkit.demo.cache import demo_cohort

        return load_cohort_csv(demo_cohort())

    def columns(self, value: Path | bool) -> list[str] | None:
        from milkit.demo.cohort import COHORT_COLUMNS

        return list(COHORT_COLUMNS)
