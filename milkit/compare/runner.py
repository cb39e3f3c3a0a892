"""Train every aggregator of ``[compare]`` on the same folds and seeds; write the comparison files."""

import csv
import dataclasses
import json
import shutil
import logging
from pathlib import Path
from typing import Any

import tomli_w

from milkit.atomic import atomic_path
from milkit.checkpoint import save_json
from milkit.compare.config import ENTRY_KEYS, CompareSection, entry_label
from milkit.compare.plot import plot_comparison
from milkit.compare.stats import mean_ci, paired_test
from milkit.data.bags import BagSource
from milkit.data.feature_check import check_feature_source
from milkit.data.splits import load_splits, make_splits, restrict_splits, save_splits
from milkit.recipe.validate import Component, ResolvedRecipe
from milkit.registry import Registries
from milkit import distributed
from milkit.errors import DataError, MilkitError, UsageError
from milkit.compare.claims import claim, release
from milkit.recipe.diff import recipe_changes
from milkit.runner import (_setup_logging, bags_for, check_rows, load_cohort, prepare_bags, start_threads,
                           split_strata, train_fold)

log = logging.getLogger("milkit")


def _variants(recipe: ResolvedRecipe, section: CompareSection, registries: Registries) -> list[tuple[str, ResolvedRecipe]]:
    out = []
    for entry in section.aggregators:
        name = entry["name"]
        cls = registries.aggregators.get(name)
        params = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
        extra = {"freeze": True} if entry.get("freeze") else {}     # a linear probe of a slide encoder
        variant = dataclasses.replace(recipe, aggregator=Component("aggregator", name, cls,
                                                                   cls.Config.model_validate(params), extra))
        if "head" in entry:
            table = entry["head"]
            head_cls = registries.heads.get(table["name"])
            config = head_cls.Config.model_validate({k: v for k, v in table.items() if k != "name"})
            variant = dataclasses.replace(variant, head=Component("head", head_cls.name, head_cls, config))
        if "train" in entry:                                         # this model family's own budget
            train = type(recipe.train).model_validate({**recipe.train.model_dump(), **entry["train"]})
            variant = dataclasses.replace(variant, train=train)
        out.append((entry_label(entry), variant))
    return out


COMPARE_ONLY = ("[compare] aggregators:", "[compare] metric:", "[compare] test:")
"""Recipe changes a finished comparison absorbs: other aggregators, or another summary of the same runs."""


def run_compare(recipe: ResolvedRecipe, registries: Registries, *, out: Path | None = None,
                progress: bool = True, console: Any = None, force_new: bool = False) -> Path:
    """Run (or resume) the comparison; finished (aggregator, seed, fold) runs are reused.

    A folder started with another recipe (other than its aggregator list or summary) is refused,
    since its finished runs would be reused; ``force_new`` deletes them and starts again.
    """
    section = recipe.compare
    if section is None:
        raise MilkitError(f"{recipe.source}: no [compare] table; add one naming the aggregators to compare")
    note = start_threads(recipe, console)
    out_dir = Path(out) if out is not None else recipe.output_dir
    if force_new and distributed.is_main():
        for stale in ("runs", "splits.json", "comparison.json", "comparison.csv", "comparison.png", "plots"):
            target = out_dir / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    changes = [c for c in recipe_changes(out_dir, recipe) if not c.startswith(COMPARE_ONLY)]
    if changes:
        raise UsageError("milkit compare", f"{out_dir} holds a comparison made with another recipe; its finished runs "
                         "would be reused. What differs (folder -> now):\n  " + "\n  ".join(changes[:12])
                         + "\nRevert the recipe, choose another --out, or add --force-new to delete those runs")
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = _setup_logging(out_dir)
    if note:
        log.warning(note)
    try:
        if distributed.is_main():
            (out_dir / "recipe.toml").write_text(tomli_w.dumps(recipe.to_dict()))
        cohort = load_cohort(recipe)
        check_rows(recipe, cohort.rows)
        slides, excluded = prepare_bags(recipe, cohort, progress=progress, console=console)  # loaded once, shared
        variants = _variants(recipe, section, registries)
        columns: set[str] = set()
        for label, variant in variants:
            needs = variant.head.cls.required_columns(variant.head.config)
            missing = [c for c in needs if c not in cohort.rows[0]]
            if missing:
                raise DataError(f"[compare] '{label}': head '{variant.head.name}' needs the cohort column(s) "
                                f"{', '.join(missing)}, which {cohort.source} lacks")
            columns.update(needs)
            check_rows(variant, cohort.rows)
            if variant.aggregator.cls.pretrained_weights(variant.aggregator.config) is not None:
                check_feature_source(variant.aggregator.cls, slides)
        cohort, store = bags_for(recipe, cohort, slides, columns=sorted(columns))
        splits_path = out_dir / "splits.json"
        if splits_path.is_file():
            splits = restrict_splits(load_splits(splits_path, set(cohort.by_id)), set(store.paths))
        else:
            rows = [r for r in cohort.rows if r["slide_id"] in store.paths]
            splits = make_splits(rows, mode="kfold", seed=recipe.run.seed, folds=section.folds,
                                 val_fraction=recipe.cohort.val_fraction, strata=split_strata(recipe, rows))
            save_splits(splits_path, splits, {"mode": "kfold", "seed": recipe.run.seed, "unit": "case_id (patient)"})
        jobs = [(label, variant, seed, fold) for label, variant in variants for seed in section.seeds
                for fold in range(len(splits))]
        _run_jobs(jobs, store, cohort.by_id, splits, out_dir, progress=progress)
        results: dict[str, list[dict[str, Any]]] = {}
        for label, _, seed, fold in jobs:
            path = _job_dir(out_dir, label, seed, fold) / "result.json"
            if path.is_file():
                results.setdefault(label, []).append({**json.loads(path.read_text()), "seed": seed})
        missing = len(jobs) - sum(len(v) for v in results.values())
        if missing:
            log.warning("compare: %d of %d runs are still being trained by other processes; re-run "
                        "`milkit compare` once they finish to write the table", missing, len(jobs))
            return out_dir
        if not distributed.is_main():
            return out_dir
        table = summarise_comparison(results, recipe, section)
        table["excluded_slides"] = excluded
        write_comparison(out_dir, table)
        try:
            from milkit.viz import write_compare_report

            log.info("report: %s", write_compare_report(out_dir, registries=registries))
        except Exception as exc:  # noqa: BLE001 - the table is already written
            log.warning("could not write report.html for %s: %s: %s", out_dir, type(exc).__name__, exc)
        return out_dir
    finally:
        log.removeHandler(handler)
        handler.close()


def _job_dir(out_dir: Path, label: str, seed: int, fold: int) -> Path:
    return out_dir / "runs" / label / f"seed_{seed}" / f"fold_{fold}"


def _run_jobs(jobs: list[tuple[str, ResolvedRecipe, int, int]], store: BagSource, by_id: dict[str, Any],
              splits: list[Any], out_dir: Path, *, progress: bool) -> None:
    """Train every unfinished (aggregator, seed, fold) job this process can claim.

    Under torchrun, rank r starts with jobs r, r+n, ... and then helps with the rest; several
    independent ``milkit compare`` processes on one dir divide the jobs the same way, by claims.
    Each job trains single-process, so its result does not depend on who ran it.
    """
    r, n = distributed.rank(), distributed.world_size()
    ordered = jobs[r::n] + [j for i, j in enumerate(jobs) if i % n != r]
    with distributed.local():
        for label, variant, seed, fold in ordered:
            job_dir = _job_dir(out_dir, label, seed, fold)
            if (job_dir / "result.json").is_file() or not claim(job_dir):
                continue
            try:
                seeded = dataclasses.replace(variant, run=variant.run.model_copy(update={"seed": seed}))
                log.info("compare: %s seed %d fold %d", label, seed, fold)
                train_fold(seeded, store, by_id, splits[fold], job_dir, fold=fold, resume=True, progress=progress)
            finally:
                release(job_dir)
    distributed.barrier()


def summarise_comparison(results: dict[str, list[dict[str, Any]]], recipe: ResolvedRecipe,
                         section: CompareSection) -> dict[str, Any]:
    metric = section.metric or recipe.head.cls.monitor
    mode = recipe.head.cls.metric_mode(metric)
    rows: list[dict[str, Any]] = []
    runs: dict[str, list[float]] = {}
    for label, folds in results.items():
        test = [f["metrics"].get("test", {}) for f in folds]
        keys = [k for k, v in test[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        row: dict[str, Any] = {"aggregator": label, "n_runs": len(folds)}
        for key in keys:
            row[key] = mean_ci([t.get(key) for t in test])
        runs[label] = [t.get(metric) for t in test]
        costs = [f["cost"] for f in folds]
        row["n_parameters"] = folds[0]["n_parameters"]
        row["seconds_per_epoch"] = sum(c["seconds_per_epoch"] or 0 for c in costs) / len(costs)
        row["peak_memory_mb"] = max(c["peak_memory_mb"] for c in costs)
        row["inference_seconds_per_slide"] = sum(c["inference_seconds_per_slide"] or 0 for c in costs) / len(costs)
        rows.append(row)
    scored = [r for r in rows if r.get(metric, {}).get("mean") is not None]
    best = (max if mode == "max" else min)(scored, key=lambda r: r[metric]["mean"])["aggregator"] if scored else None
    for row in rows:
        if best is not None and row.get(metric, {}).get("mean") is None:   # its head does not report the metric
            row["vs_best"] = {"method": section.test, "p_value": None, "within_noise": None, "is_best": False}
        elif best is None or row["aggregator"] == best:
            row["vs_best"] = {"method": section.test, "p_value": None, "within_noise": None, "is_best": row["aggregator"] == best}
        else:
            row["vs_best"] = {**paired_test(runs[row["aggregator"]], runs[best], method=section.test), "is_best": False}
    return {"metric": metric, "mode": mode, "best": best, "folds": section.folds, "seeds": section.seeds,
            "rows": rows, "runs": runs}


def write_comparison(out_dir: Path, table: dict[str, Any]) -> None:
    save_json(out_dir / "comparison.json", table)
    metric = table["metric"]
    metric_keys: list[str] = []
    for row in table["rows"]:
        metric_keys.extend(k for k, v in row.items() if isinstance(v, dict) and "ci95" in v and k not in metric_keys)
    header = ["aggregator", "n_runs"]
    for k in metric_keys:
        header += [f"{k}_mean", f"{k}_std", f"{k}_ci95_low", f"{k}_ci95_high"]
    header += ["n_parameters", "seconds_per_epoch", "peak_memory_mb", "inference_seconds_per_slide",
               f"p_vs_best_{metric}", "within_noise_of_best"]
    with atomic_path(out_dir / "comparison.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in table["rows"]:
            line: list[Any] = [row["aggregator"], row["n_runs"]]
            for k in metric_keys:
                s = row.get(k, {"mean": None, "std": None, "ci95": [None, None]})
                line += [s["mean"], s["std"], *s["ci95"]]
            vs = row["vs_best"]
            line += [row["n_parameters"], row["seconds_per_epoch"], row["peak_memory_mb"],
                     row["inference_seconds_per_slide"], vs.get("p_value"),
                     "best" if vs["is_best"] else vs.get("within_noise")]
            w.writerow(line)
    plot_comparison(table["rows"], table["runs"], metric, out_dir / "comparison.png")


def load_comparison(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "comparison.json").read_text())
