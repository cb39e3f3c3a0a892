"""Read what ``milkit run`` left in a run dir: metrics, predictions, per-epoch logs, splits."""

import json
import math
from pathlib import Path
from typing import Any, Literal

import pandas as pd

Record = dict[str, Any]
Task = Literal["classification", "survival", "report", "unknown"]
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


def task_of(records: list[Record]) -> Task:
    """Which head wrote the predictions, from their columns."""
    keys = set(records[0]) if records else set()
    if any(k.startswith("prob_") for k in keys) and {"target", "pred"} <= keys:
        return "classification"
    if {"time", "event", "risk"} <= keys:
        return "survival"
    if {"generated", "reference"} <= keys:
        return "report"
    return "unknown"


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
