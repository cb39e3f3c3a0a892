"""A cohort (one row per slide) and milkit's own layout, the CSV table (format ``csv``)."""

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from milkit.errors import DataError

Row = dict[str, Any]


@dataclass
class Cohort:
    """Rows (one per slide) plus, for layouts that carry one, the split each slide was given."""

    rows: list[Row]
    source: Path
    given_splits: dict[str, list[str]] | None = None

    @property
    def by_id(self) -> dict[str, Row]:
        return {r["slide_id"]: r for r in self.rows}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def load_cohort_csv(path: Path, *, slides_dir: Path | None = None) -> Cohort:
    """Read ``slide_id, case_id, ...`` rows; ``slide_path`` is resolved against the CSV's folder."""
    try:
        df = pd.read_csv(path, dtype={"slide_id": str, "case_id": str, "label": str})
    except Exception as exc:
        raise DataError(f"cannot read cohort table {path}: {exc}") from exc
    if "slide_id" not in df.columns:
        raise DataError(f"{path}: no 'slide_id' column; columns present: {', '.join(df.columns)}")
    dup = df["slide_id"][df["slide_id"].duplicated()].tolist()
    if dup:
        raise DataError(f"{path}: slide_id values must be unique; repeated: {', '.join(map(str, dup[:5]))}")
    if "case_id" not in df.columns:
        df["case_id"] = df["slide_id"]  # no patient ids given: each slide is its own patient
    rows = [{k: _clean(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]
    for row in rows:
        if row.get("case_id") is None:
            row["case_id"] = row["slide_id"]
        if row.get("slide_path"):
            p = Path(str(row["slide_path"]))
            row["slide_path"] = str(p if p.is_absolute() else (path.parent / p).resolve())
        elif slides_dir is not None:
            hits = sorted(slides_dir.glob(f"{row['slide_id']}.*"))
            if hits:
                row["slide_path"] = str(hits[0])
    return Cohort(rows=rows, source=path)


def csv_columns(path: Path) -> list[str]:
    """The header of a CSV table ([] if it is empty)."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                        "save the table as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV table ({exc})") from None

