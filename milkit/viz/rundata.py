"""Read what ``milkit run`` left in a run dir: metrics, predictions, per-epoch logs, splits."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from milkit.data.cases import CASES_FILE

Record = dict[str, Any]
TEXT_COLUMNS = ("slide_id", "target", "pred", "generated", "reference", "split", "case_id")


def load_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def load_predictions(run_dir: Path) -> list[Record]:
    """Rows of ``predictions.csv`` (text columns kept as text, empty cells as '')."""
    path = Path(run_dir) / "predictions.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    frame = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False)
    return frame.to_dict("records")


def eval_split(records: list[Record]) -> str | None:
    """``test`` when predictions include it, else ``val`` (else None)."""
    splits = {r["split"] for r in records}
    return next((s for s in ("test", "val") if s in splits), None)


def of_split(records: list[Record], split: str, fold: int | None = None) -> list[Record]:
    return [r for r in records if r["split"] == split and (fold is None or int(r["fold"]) == fold)]


def fold_epochs(run_dir: Path) -> dict[int, list[Record]]:
    """fold -> the entries of ``fold_<k>/metrics.jsonl`` (folds without one are left out)."""
    out: dict[int, list[Record]] = {}
    for path in sorted(Path(run_dir).glob("fold_*/metrics.jsonl")):
        fold = int(path.parent.name.split("_")[1])
        out[fold] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def fold_records(run_dir: Path, fold: int, split: str) -> list[Record] | None:
    """Records of ``split`` for ``fold``: from predictions.csv, else ``fold_<k>/result.json``
    (which also keeps the train-split records a survival head evaluates with)."""
    rows = of_split(load_predictions(run_dir), split, fold)
    if rows:
        return rows
    path = Path(run_dir) / f"fold_{fold}" / "result.json"
    if path.is_file():
        records = json.loads(path.read_text()).get("records", {}).get(split)
        if records:
            return records
    return None


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_splits_summary(run_dir: Path) -> list[dict[str, int]]:
    """Per fold, the number of slides in each split (from ``splits.json``)."""
    path = Path(run_dir) / "splits.json"
    if not path.is_file():
        return []
    return [{part: len(ids) for part, ids in fold.items()} for fold in json.loads(path.read_text())["folds"]]


@dataclass
class RunView:
    """A finished run dir as :meth:`milkit.Head.plots` sees it.

    Attributes:
        run_dir: the run dir.
        metrics: ``metrics.json`` ({} when unreadable).
        records: every row of ``predictions.csv``.
        split: the evaluation split the plots show (``test``, else ``val``).
    """

    run_dir: Path
    metrics: dict[str, Any]
    records: list[Record]
    split: str

    @property
    def rows(self) -> list[Record]:
        """Records of the evaluation split, every fold."""
        return of_split(self.records, self.split)

    @property
    def pooled(self) -> str:
        """``"test split"`` or ``"test split, 5 folds pooled"``, for captions."""
        n_folds = len({int(r["fold"]) for r in self.rows})
        return f"{self.split} split" + (f", {n_folds} folds pooled" if n_folds > 1 else "")

    def fold_rows(self, fold: int, split: str | None = None) -> list[Record] | None:
        """Records of ``split`` (default: the evaluation split) for ``fold``; see :func:`fold_records`."""
        return fold_records(self.run_dir, fold, split or self.split)


def case_slides(run_dir: Path) -> dict[str, list[str]]:
    """The slides of each patient-level bag of a run; {} for slide-level runs."""
    path = Path(run_dir) / CASES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}

