"""What the viewer shows of one run dir: its slides, the prediction row of each, splits, cases, reports.

Read with :mod:`milkit.viz.rundata` (``predictions.csv``, ``metrics.json``, ``splits.json``,
``cases.json``). A patient-level run predicts one row per case; each of the case's slides shows
that row. The model is loaded only when a slide's attention is first asked for.
"""

import hashlib
import json
import logging
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

from milkit.errors import DataError
from milkit.viz import rundata

log = logging.getLogger("milkit")

SPLIT_ORDER = ("test", "val", "train")
"""The split a slide's shown prediction comes from, in order of preference."""
HIDDEN_FIELDS = ("slide_id", "split", "fold", "reference", "case_id", "slide_ids")
"""Prediction fields not shown as cohort columns (split and fold are shown on their own)."""
REPORT_SCORE_KEYS = ("BLEU_1", "BLEU_4", "ROUGE_L")
"""Per-report scores shown for report runs (of :func:`milkit.metrics.reports.report_scores_per_sample`)."""


def run_token(run_dir: Path | str) -> str:
    """A neutral id of a run dir (hash of its resolved path): report.html asks a running viewer whether
    it serves this run without either side revealing paths."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class ViewRun:
    """A finished ``milkit run`` output folder as the viewer reads it.

    Args:
        run_dir: the run dir.
        label: a short name shown on pages (``A``, ``B``, ... when several runs are compared).
        registries: component registries, for reading the recipe and loading the model.
    """

    def __init__(self, run_dir: Path | str, label: str, registries: Any) -> None:
        self.run_dir = Path(run_dir).resolve()
        if not (self.run_dir / "recipe.toml").is_file():
            raise DataError(f"{run_dir} is not a milkit run dir (no recipe.toml); pass the folder `milkit run` wrote")
        self.label = label
        self.registries = registries
        self.token = run_token(self.run_dir)
        try:
            self.metrics: dict[str, Any] = rundata.load_metrics(self.run_dir)
        except (OSError, ValueError):
            self.metrics = {}
        self.records = rundata.load_predictions(self.run_dir)
        self.cases = rundata.case_slides(self.run_dir)
        self.slide_case = {s: c for c, slides in self.cases.items() for s in slides}
        self._rows = self._rows_by_bag()
        self._splits = self._split_of_bags()
        self._scorers: dict[int, Any] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.metrics.get("run") or self.run_dir.name)

    @property
    def is_report_run(self) -> bool:
        return any(r.get("generated") not in (None, "") for r in self.records)

    def _rows_by_bag(self) -> dict[str, dict[str, Any]]:
        """The shown prediction of each bag: its test row (lowest fold), else val, else train."""
        rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
        best: dict[str, dict[str, Any]] = {}
        for r in self.records:
            bag = str(r["slide_id"])
            key = (rank.get(str(r.get("split")), len(rank)), int(r.get("fold") or 0))
            old = best.get(bag)
            if old is None or key < (rank.get(str(old.get("split")), len(rank)), int(old.get("fold") or 0)):
                best[bag] = r
        return best

    def _split_of_bags(self) -> dict[str, str]:
        """Fold 0's split of every bag (``splits.json``), for bags without a prediction row."""
        path = self.run_dir / "splits.json"
        try:
            folds = json.loads(path.read_text())["folds"] if path.is_file() else []
        except (OSError, ValueError, KeyError):
            folds = []
        return {str(b): part for part, bags in (folds[0].items() if folds else []) for b in bags}

    def bag_of(self, slide_id: str) -> str:
        """The bag (case id in patient-level runs, else the slide itself) a slide belongs to."""
        return self.slide_case.get(slide_id, slide_id)

    def slide_ids(self) -> list[str]:
        """Every slide of the run: its bags from splits.json and predictions, cases expanded to slides."""
        bags = list(dict.fromkeys([*self._splits, *self._rows]))
        return list(dict.fromkeys(s for b in bags for s in self.cases.get(b, [b])))

    def row(self, slide_id: str) -> dict[str, Any] | None:
        """The prediction row shown for ``slide_id`` (its case's in patient-level runs), or None."""
        return self._rows.get(self.bag_of(slide_id))

    def split(self, slide_id: str) -> str | None:
        row = self.row(slide_id)
        return str(row["split"]) if row else self._splits.get(self.bag_of(slide_id))

    def fold(self, slide_id: str) -> int:
        """The fold whose model predicted the shown row (0 when the slide has no prediction)."""
        row = self.row(slide_id)
        return int(row.get("fold") or 0) if row else 0

    def folds(self) -> list[int]:
        """Folds with a trained model."""
        return sorted(int(p.parent.name.split("_")[1]) for p in self.run_dir.glob("fold_*/target_state.json"))

    @cached_property
    def report_scores(self) -> dict[str, dict[str, float]]:
        """Per-report BLEU / ROUGE-L of every shown row with a generated and a reference report ({} if the
        report metrics are not installed)."""
        pairs = [(bag, str(r["generated"]), str(r["reference"])) for bag, r in self._rows.items()
                 if r.get("generated") and r.get("reference")]
        if not pairs:
            return {}
        try:
            from milkit.metrics.reports import report_scores_per_sample

            scores = report_scores_per_sample([g for _, g, _ in pairs], [ref for _, _, ref in pairs])
        except Exception as exc:  # pycocoevalcap missing or a report it cannot score: show the text only
            log.warning("per-report scores unavailable: %s", exc)
            return {}
        return {bag: s for (bag, _, _), s in zip(pairs, scores, strict=True)}

    def fields(self, slide_id: str) -> dict[str, Any]:
        """The cohort-page fields of a slide: split, fold, the prediction's own fields (class
        probabilities summarised as ``p(pred)``) and, for report runs, per-report scores."""
        row = self.row(slide_id)
        out: dict[str, Any] = {"split": self.split(slide_id)}
        if row is None:
            return out
        out["fold"] = int(row.get("fold") or 0)
        probs = {k[5:]: v for k, v in row.items() if k.startswith("prob_") and rundata.is_number(v)}
        for key, value in row.items():
            if key not in HIDDEN_FIELDS and not key.startswith("prob_"):
                out[key] = value
        if probs and row.get("pred") in probs:
            out["p(pred)"] = probs[row["pred"]]
        scores = self.report_scores.get(self.bag_of(slide_id))
        if scores:
            out.update({k: scores[k] for k in REPORT_SCORE_KEYS if k in scores})
        return out

    def report(self, slide_id: str) -> dict[str, Any] | None:
        """Generated and reference report of the slide's row, every per-report score, and the row's other
        fields (finding agreement, if the head wrote it); None for runs without reports."""
        row = self.row(slide_id)
        if row is None or not (row.get("generated") or row.get("reference")):
            return None
        other = {k: v for k, v in row.items() if k not in (*HIDDEN_FIELDS, "generated") and not k.startswith("prob_")}
        return {"generated": row.get("generated", ""), "reference": row.get("reference", ""),
                "scores": self.report_scores.get(self.bag_of(slide_id), {}), "fields": other}

    def scorer(self, fold: int) -> Any:
        """The run's :class:`milkit.viz.attention.RunScorer` for ``fold``, loaded on first use."""
        from milkit.viz.attention import RunScorer

        with self._lock:
            if fold not in self._scorers:
                self._scorers[fold] = RunScorer(self.run_dir, fold=fold, registries=self.registries)
            return self._scorers[fold]

    @cached_property
    def cohort_files(self) -> tuple[dict[str, Path], Path | None]:
        """(slide id -> slide file from the cohort's ``slide_path``, the feature folder), from the recipe;
        ({}, explicit features_dir or None) when the cohort cannot be read."""
        from milkit.recipe import load_recipe, validate_recipe
        from milkit.runner import features_dir, load_cohort

        try:
            recipe = validate_recipe(load_recipe(self.run_dir / "recipe.toml"), self.registries, check_files=False)
        except Exception as exc:
            log.warning("%s: recipe unreadable (%s); slide files must come from --slides", self.run_dir, exc)
            return {}, None
        try:
            cohort = load_cohort(recipe)
            paths = {str(r["slide_id"]): Path(r["slide_path"]) for r in cohort.rows if r.get("slide_path")}
            return paths, Path(features_dir(recipe, cohort))
        except Exception as exc:  # cohort moved: only an explicit features_dir is known
            log.warning("%s: cohort unreadable (%s)", self.run_dir, exc)
            return {}, recipe.cohort.features_dir

    def summary(self) -> dict[str, Any]:
        """What the pages show about the run."""
        return {"label": self.label, "name": self.name, "aggregator": self.metrics.get("aggregator"),
                "head": self.metrics.get("head"), "folds": self.folds(), "report": self.is_report_run,
                "cases": bool(self.cases), "token": self.token}
