"""Patient-level (case_id) disjoint splits: stratified holdout, stratified K-fold, or given."""

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from milkit.atomic import write_text
from milkit.errors import DataError

Split = dict[str, list[str]]  # {"train": [...], "val": [...], "test": [...]} slide ids


def _group_folds(ids: list[str], groups: list[str], strata: list[str], k: int, seed: int) -> list[list[int]]:
    """Indices of K patient-disjoint, stratified folds (StratifiedGroupKFold, shuffled)."""
    n_groups = len(set(groups))
    if n_groups < 2:
        raise DataError(f"{n_groups} patient(s) (case_id) left to split: patient-disjoint splits need at least 2; "
                        "add slides, or check that case_id is not the same for every row")
    k = max(2, min(k, n_groups))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        return [list(test) for _, test in splitter.split(np.zeros(len(ids)), strata, groups)]
    except ValueError as exc:  # scikit-learn's own check, e.g. more splits than members of a class
        counts = {s: len({g for g, t in zip(groups, strata) if t == s}) for s in sorted(set(strata))}
        raise DataError(f"cannot make {k} patient-disjoint stratified folds from {n_groups} patients "
                        f"(patients per stratum: {', '.join(f'{s}: {n}' for s, n in counts.items())}): {exc}. "
                        "Lower [cohort] folds (or raise test_fraction/val_fraction), or set stratify = \"none\"") from None


def _carve_val(rows: list[dict[str, Any]], idx: list[int], stratum, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if val_fraction <= 0 or len(idx) < 4:
        return idx, []
    k = max(2, round(1 / val_fraction))
    sub = [rows[i] for i in idx]
    folds = _group_folds([r["slide_id"] for r in sub], [r["case_id"] for r in sub], [stratum(r) for r in sub], k, seed)
    val = {idx[j] for j in folds[0]}
    return [i for i in idx if i not in val], sorted(val)


def make_splits(
    rows: list[dict[str, Any]], *, mode: str, seed: int, folds: int = 5, val_fraction: float = 0.15,
    test_fraction: float = 0.2, stratify: str | None = None, strata: list[str] | None = None,
) -> list[Split]:
    """Build splits whose train/val/test never share a patient (``case_id``).

    ``holdout`` gives one split; ``kfold`` gives K splits whose test sets partition the
    cohort (each with its own validation carve-out from the training patients). Each split
    is balanced on ``strata`` (one label per row, e.g. a head's quantile bins) when given,
    else on the values of the column ``stratify``.
    """
    ids = [r["slide_id"] for r in rows]
    given = dict(zip(ids, strata, strict=True)) if strata is not None else None

    def stratum(r: dict[str, Any]) -> str:
        if given is not None:
            return given[r["slide_id"]]
        return str(r.get(stratify)) if stratify else "all"

    groups = [str(r["case_id"]) for r in rows]
    labels = [stratum(r) for r in rows]
    k = folds if mode == "kfold" else max(2, round(1 / test_fraction))
    test_folds = _group_folds(ids, groups, labels, k, seed)
    out: list[Split] = []
    for f, test_idx in enumerate(test_folds if mode == "kfold" else test_folds[:1]):
        test = set(test_idx)
        rest = [i for i in range(len(rows)) if i not in test]
        train, val = _carve_val(rows, rest, stratum, val_fraction, seed + 1 + f)
        out.append({"train": [ids[i] for i in train], "val": [ids[i] for i in val], "test": [ids[i] for i in sorted(test)]})
    check_disjoint(out, rows)
    return out


def restrict_splits(splits: list[Split], available: set[str]) -> list[Split]:
    """The same splits with only the slides in ``available`` (e.g. those whose bags are usable)."""
    return [{part: [s for s in ids if s in available] for part, ids in split.items()} for split in splits]


def check_disjoint(splits: list[Split], rows: list[dict[str, Any]]) -> None:
    """Raise if any patient appears in two parts of one split."""
    case = {r["slide_id"]: str(r["case_id"]) for r in rows}
    for f, split in enumerate(splits):
        seen: dict[str, str] = {}
        for part, sids in split.items():
            for sid in sids:
                c = case.get(sid, sid)
                if seen.setdefault(c, part) != part:
                    raise DataError(f"fold {f}: patient {c} is in both {seen[c]} and {part}; splits must be patient-disjoint")


def save_splits(path: Path, splits: list[Split], meta: dict[str, Any]) -> None:
    write_text(path, json.dumps({**meta, "folds": splits}, indent=1))


def load_splits(path: Path, known_ids: set[str]) -> list[Split]:
    """Read a splits.json (milkit's layout); slides unknown to the cohort are an error."""
    try:
        data = json.loads(path.read_text())
        folds = data["folds"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read splits from {path}: {exc} (expected milkit's splits.json with 'folds')") from exc
    unknown = sorted({s for f in folds for part in f.values() for s in part} - known_ids)
    if unknown:
        raise DataError(f"{path}: {len(unknown)} slide(s) not in the cohort, e.g. {', '.join(unknown[:5])}")
    return folds
