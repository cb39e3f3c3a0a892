"""milkit's own cohort layout, the CSV table, registered through the same hook as any plugin's."""

from pathlib import Path

from milkit.cohort_format import CohortFormat
from milkit.data.cohort import Cohort, csv_columns, load_cohort_csv
from milkit.hookspecs import hookimpl


class CSVCohort(CohortFormat):
    """``csv = "cohort.csv"``: slide_id, case_id, the task's columns, optional slide_path and mpp."""

    name = "csv"
    key = "csv"
    description = "cohort table: slide_id, case_id, task columns, optional slide_path and mpp"

    def load(self, value: Path | bool, *, slides_dir: Path | None = None) -> Cohort:
        return load_cohort_csv(Path(str(value)), slides_dir=slides_dir)

    def columns(self, value: Path | bool) -> list[str] | None:
        return csv_columns(Path(str(value)))


@hookimpl
def milkit_register_cohort_formats() -> list[type[CohortFormat]]:
    return [CSVCohort]
