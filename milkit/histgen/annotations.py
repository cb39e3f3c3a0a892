"""HistGen's release layout, ``annotation.json``: {train, val, test: [{id, report}]}, as a cohort format."""

import json
from pathlib import Path

from milkit.cohort_format import CohortFormat
from milkit.data.cohort import Cohort, Row
from milkit.errors import DataError


def load_histgen_annotations(path: Path) -> Cohort:
    """Rows ``slide_id, case_id, report, split``; case_id is the TCGA patient (first three fields)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read HistGen annotations {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object with train, val and test lists, got {type(data).__name__}")
    rows: list[Row] = []
    splits: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        if not isinstance(data.get(split), list):
            raise DataError(f"{path}: no '{split}' list (HistGen annotations have train, val and test)")
        splits[split] = []
        for i, rec in enumerate(data[split]):
            if not isinstance(rec, dict) or "id" not in rec:
                raise DataError(f"{path}: {split}[{i}] has no 'id' (each entry is {{\"id\": ..., \"report\": ...}})")
            sid = str(rec["id"])
            case = "-".join(sid.split("-")[:3]) if sid.startswith("TCGA-") else sid
            rows.append({"slide_id": sid, "case_id": case, "report": rec.get("report", ""), "split": split})
            splits[split].append(sid)
    return Cohort(rows=rows, source=path, given_splits=splits)


class HistGenAnnotations(CohortFormat):
    """``annotations = "annotation.json"``: HistGen's train/val/test lists of {id, report}."""

    name = "histgen-annotations"
    key = "annotations"
    description = "HistGen annotation JSON (train/val/test lists of {id, report}); carries its split"
    has_splits = True

    def load(self, value: Path | bool, *, slides_dir: Path | None = None) -> Cohort:
        return load_histgen_annotations(Path(str(value)))

    def columns(self, value: Path | bool) -> list[str] | None:
        return ["slide_id", "case_id", "report", "split"]
