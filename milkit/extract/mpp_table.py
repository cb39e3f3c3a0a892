"""Per-slide microns per pixel supplied by the user, for slides whose files lack it or get it wrong."""

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from milkit.errors import DataError
from milkit.slides import slide_id_from_path
from milkit.slides.base import MPP_RANGE


def checked_slide_mpp(value: object, where: str) -> float | None:
    """``value`` as a plausible level-0 mpp; None for an empty cell; DataError naming ``where`` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()) or \
            (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        mpp = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{where}: mpp {value!r} is not a number (e.g. 0.25 for 40x, 0.5 for 20x)") from None
    if not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        raise DataError(f"{where}: mpp {mpp:g} is outside {MPP_RANGE[0]}-{MPP_RANGE[1]} um/px "
                        "(0.25 for 40x, 0.5 for 20x)")
    return mpp


def read_mpp_table(path: Path) -> dict[str, float]:
    """``slide_id,mpp`` rows (``slide`` may be a file name or path instead of an id) -> {slide_id: mpp}.

    Raises:
        DataError: naming the file, line and what is wrong.
    """
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            key = next((c for c in ("slide_id", "slide") if c in cols), None)
            if key is None or "mpp" not in cols:
                found = ", ".join(cols) or "none"
                raise DataError(f"{path}: expected columns slide_id (or slide) and mpp; found {found}")
            out: dict[str, float] = {}
            for line, row in enumerate(reader, start=2):
                sid = slide_id_from_path(row[key].strip()) if key == "slide" else row[key].strip()
                mpp = checked_slide_mpp(row["mpp"], f"{path} line {line} ({sid})")
                if mpp is None:
                    continue
                if sid in out and out[sid] != mpp:
                    raise DataError(f"{path} line {line}: slide {sid} is listed twice with different mpp")
                out[sid] = mpp
    except OSError as exc:
        raise DataError(f"cannot read the mpp table {path}: {exc}") from exc
    return out


def unknown_slides(table: dict[str, float], slide_ids: Iterable[str]) -> list[str]:
    """Ids in ``table`` that are none of ``slide_ids`` (likely typos), sorted."""
    return sorted(set(table) - set(slide_ids))
