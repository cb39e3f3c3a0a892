"""Patient-level bags (``[cohort] bag = "case"``): all slides of a ``case_id`` as one bag.

The cohort becomes one row per case (its ``slide_id`` is the case id, ``slide_ids`` lists the
slides) and :class:`CaseBags` serves each case's bag: the slides' patches concatenated in slide-id
order. Each slide's coordinates are shifted to start ``GAP_PX`` right of the previous slide's last
patch, so the slides lie side by side on one canvas and spatial aggregators never mix patches of
two slides; :meth:`CaseBags.parts` maps patch rows back to their slides (heatmaps).
"""

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from milkit.data.bags import BagStore
from milkit.data.cohort import Cohort, Row
from milkit.errors import DataError

GAP_PX = 65536.0
"""Level-0 pixels between two slides of a case on the shared canvas (larger than any patch or region)."""
CASES_FILE = "cases.json"
"""Written into the run dir of patient-level runs: ``{case_id: [slide ids]}`` (heatmaps read it)."""
SLIDE_IDS = "slide_ids"
"""Row field of a case row: its slides, ``;``-separated, in bag order."""


def group_by_case(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows per ``case_id``, cases and slides in sorted order."""
    cases: dict[str, list[Row]] = {}
    for r in rows:
        cases.setdefault(str(r["case_id"]), []).append(r)
    return {c: sorted(cases[c], key=lambda r: str(r["slide_id"])) for c in sorted(cases)}


def case_row(case_id: str, slides: list[Row], columns: Iterable[str]) -> Row:
    """One row for a case: the target ``columns`` must agree across its slides (empty cells aside)."""
    row: Row = {**slides[0], "slide_id": case_id, "case_id": case_id,
                SLIDE_IDS: ";".join(str(r["slide_id"]) for r in slides)}
    for col in columns:
        values = {r.get(col) for r in slides} - {None, ""}
        if len(values) > 1:
            shown = ", ".join(f"{r['slide_id']}={r.get(col)!r}" for r in slides)
            raise DataError(f"case {case_id}: its slides disagree on '{col}' ({shown}); with [cohort] bag = \"case\" "
                            "a patient has one target: fix the table, or use bag = \"slide\"")
        row[col] = next(iter(values), slides[0].get(col))
    return row


class CaseBags:
    """A :class:`BagStore` view that serves one bag per case (same interface as the store)."""

    def __init__(self, store: BagStore, members: dict[str, list[str]]) -> None:
        self.store, self.members = store, members
        self.paths: dict[str, Path] = {c: store.paths[s[0]] for c, s in members.items()}
        """Case id -> the file of its first slide (for messages); every slide's file is in ``store``."""

    def __contains__(self, case_id: str) -> bool:
        return case_id in self.members

    def load(self, case_id: str) -> tuple[Tensor, Tensor]:
        """(features [sum N_i, D], coords [sum N_i, 2]): the case's slides side by side."""
        feats, coords, offset = [], [], 0.0
        for sid in self.members[case_id]:
            f, c = self.store.load(sid)
            c = c.clone()
            if len(c):
                c[:, 0] += offset - c[:, 0].min()                  # this slide starts at the offset
                offset = float(c[:, 0].max()) + GAP_PX
            feats.append(f)
            coords.append(c)
        return torch.cat(feats), torch.cat(coords)

    def parts(self, case_id: str) -> list[tuple[str, int]]:
        """(slide id, number of patches) of the case's bag, in order."""
        return [(s, int(self.store.load(s)[0].shape[0])) for s in self.members[case_id]]

    def prefetch(self, case_ids: Iterable[str]) -> None:
        self.store.prefetch([s for c in case_ids for s in self.members[c]])

    def forget(self, case_id: str) -> None:
        for s in self.members[case_id]:
            self.store.forget(s)

    @property
    def feature_dim(self) -> int:
        return self.store.feature_dim

    @property
    def read_rate_mb_s(self) -> float:
        return self.store.read_rate_mb_s


def case_cohort(cohort: Cohort, store: BagStore, columns: Iterable[str]) -> tuple[Cohort, CaseBags]:
    """The case-level cohort of the slides in ``store`` and its bag view; given splits (per slide) are
    mapped to cases, which must not straddle two parts."""
    columns = tuple(columns)
    cases = group_by_case(r for r in cohort.rows if r["slide_id"] in store.paths)
    rows = [case_row(c, slides, columns) for c, slides in cases.items()]
    given: dict[str, list[str]] | None = None
    if cohort.given_splits is not None:
        case_of = {str(r["slide_id"]): str(r["case_id"]) for r in cohort.rows}
        part_of: dict[str, str] = {}
        for part, ids in cohort.given_splits.items():
            for sid in ids:
                c = case_of.get(str(sid))
                if c is not None and part_of.setdefault(c, part) != part:
                    raise DataError(f"case {c}: its slides are in both '{part_of[c]}' and '{part}' of the given "
                                    "splits; patient-level bags need patient-level splits")
        given = {part: sorted({c for c, p in part_of.items() if p == part and c in cases})
                 for part in cohort.given_splits}
    members = {c: [str(r["slide_id"]) for r in slides] for c, slides in cases.items()}
    return Cohort(rows=rows, source=cohort.source, given_splits=given), CaseBags(store, members)

