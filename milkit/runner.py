"""``milkit run``: cohort -> (extraction if needed) -> splits -> train/evaluate each fold -> run dir."""

import csv
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch

from milkit import __version__, distributed
from milkit.atomic import atomic_path
from milkit.checkpoint import save_json
from milkit.data.bags import BagSource, BagStore, find_feature_file
from milkit.data.cases import CASES_FILE, CaseBags, case_cohort
from milkit.data.feature_check import check_feature_source
from milkit.data.cohort import Cohort
from milkit.data.splits import Split, load_splits, make_splits, restrict_splits, save_splits
from milkit.errors import DataError
from milkit.loggers import RunLoggers, open_loggers
from milkit.model import MILModel
from milkit.recipe.diff import check_resumable
from milkit.recipe.validate import ResolvedRecipe
from milkit.registry import Registries
from milkit.trainer import FoldData, Trainer, check_rows, pick_device, seed_everything

log = logging.getLogger("milkit")


def load_cohort(recipe: ResolvedRecipe) -> Cohort:
    """The recipe's cohort, read by the cohort format its ``[cohort]`` key names."""
    return recipe.cohort_source.load(slides_dir=recipe.cohort.slides_dir)


def features_dir(recipe: ResolvedRecipe, cohort: Cohort) -> Path:
    if recipe.cohort.features_dir is not None:
        return recipe.cohort.features_dir
    base = cohort.source.parent / "features"
    return base / recipe.extractor.name if recipe.extractor is not None else base


def ensure_features(recipe: ResolvedRecipe, cohort: Cohort, *,
                    progress: bool = True) -> tuple[dict[str, Path], dict[str, str]]:
    """Feature file per slide; slides without one are extracted (when a slide file and an
    [extractor] are known) or left out. Returns the files and ``{slide_id: why it was left out}``."""
    fdir = features_dir(recipe, cohort)
    paths: dict[str, Path] = {}
    missing: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for row in cohort.rows:
        path = find_feature_file(fdir, row["slide_id"]) if fdir.is_dir() else None
        if path is not None:
            paths[row["slide_id"]] = path
        else:
            missing.append(row)
    extractable = [r for r in missing if r.get("slide_path")]
    if extractable and recipe.extractor is not None:
        from milkit.extract.mpp_table import checked_slide_mpp
        from milkit.extract.pipeline import extract_slides

        log.info("extracting features for %d slide(s) into %s", len(extractable), fdir)
        encoder = recipe.extractor.cls(recipe.extractor.config)
        shard = (distributed.rank(), distributed.world_size()) if distributed.active() else None
        slide_mpp = {r["slide_id"]: m for r in extractable
                     if (m := checked_slide_mpp(r.get("mpp"), f"{cohort.source} slide {r['slide_id']}")) is not None}
        summary = extract_slides([Path(r["slide_path"]) for r in extractable], fdir, extractor=encoder,
                                 settings=recipe.extractor.extra["settings"], shard=shard,
                                 slide_ids=[r["slide_id"] for r in extractable], slide_mpp=slide_mpp,
                                 progress=progress and distributed.is_main())
        distributed.barrier()  # every rank's share is written before anyone reads
        for sid, reason in summary.failed:
            failed[sid] = f"extraction failed: {reason}"
        for o in summary.outcomes:
            if o.status == "skipped" and not o.n_tiles:                # e.g. no annotation file
                failed[o.slide_id] = f"extraction skipped: {o.reason}"
        for row in extractable:
            path = find_feature_file(fdir, row["slide_id"])
            if path is not None:
                paths[row["slide_id"]] = path
    lost = {r["slide_id"]: failed.get(r["slide_id"], f"no feature file in {fdir}" + (
        "" if r.get("slide_path") or recipe.extractor is None else " and no slide_path to extract from"))
        for r in cohort.rows if r["slide_id"] not in paths}
    if not paths:
        hint = "add an [extractor] table and slide_path column" if recipe.extractor is None else "see the extraction report"
        raise DataError(f"no feature files found in {fdir} for any slide of {cohort.source}; {hint}")
    return paths, lost


def prepare_bags(recipe: ResolvedRecipe, cohort: Cohort, *, progress: bool = True,
                 console: Any = None) -> tuple[BagStore, list[dict[str, str]]]:
    """Features for every slide (extracted if needed), each bag checked once; the unusable ones are
    left out and named (``[cohort] strict = true``: the first one aborts). Returns the store and
    ``[{slide_id, reason}]`` of the slides left out."""
    from milkit.data.screen import screen_bags

    paths, lost = ensure_features(recipe, cohort, progress=progress)
    store = make_store(recipe, cohort, paths)
    if not (lost and recipe.cohort.strict):  # strict: the first missing feature file is enough
        lost.update(screen_bags(store, progress=progress))
    if lost and recipe.cohort.strict:
        sid, reason = next(iter(lost.items()))
        raise DataError(f"slide {sid}: {reason} ([cohort] strict = true; set it to false to leave such slides out)")
    if not store.paths:
        raise DataError(f"no usable bag left in {cohort.source}: " + "; ".join(f"{s}: {r}" for s, r in list(lost.items())[:5]))
    excluded = [{"slide_id": sid, "reason": reason} for sid, reason in lost.items()]
    report_excluded(excluded, console)
    return store, excluded


def bags_for(recipe: ResolvedRecipe, cohort: Cohort, store: BagStore,
             columns: Sequence[str] | None = None) -> tuple[Cohort, BagSource]:
    """The cohort and bags the model trains on: per slide, or with ``[cohort] bag = "case"`` per patient
    (whose slides must agree on ``columns``, default: the head's target columns)."""
    if recipe.cohort.bag == "slide":
        return cohort, store
    if columns is None:
        columns = recipe.head.cls.required_columns(recipe.head.config)
    cases, bags = case_cohort(cohort, store, columns)
    log.info("[cohort] bag = \"case\": %d patient-level bags from %d slides", len(bags.members), len(store.paths))
    return cases, bags


def report_excluded(excluded: list[dict[str, str]], console: Any = None) -> None:
    """Name the slides left out in the log and, when there is one, on the console."""
    if not excluded:
        return
    lines = [f"{e['slide_id']}: {e['reason']}" for e in excluded]
    log.warning("%d slide(s) left out of this run:\n  %s", len(excluded), "\n  ".join(lines))
    if console is not None:
        from rich.markup import escape

        shown = lines[:20] + ([f"... and {len(lines) - 20} more (see metrics.json excluded_slides)"] if len(lines) > 20 else [])
        console.print(f"[yellow]warning:[/] {len(excluded)} slide(s) left out of this run:\n  "
                      + "\n  ".join(escape(s) for s in shown))


def make_store(recipe: ResolvedRecipe, cohort: Cohort, paths: dict[str, Path]) -> BagStore:
    c = recipe.cohort
    fp16_dir = features_dir(recipe, cohort) / "fp16" if c.storage == "float16" else None
    return BagStore(paths, cache=c.cache_in_memory, cache_mb=c.cache_mb, fp16_dir=fp16_dir,
                    prefetch_workers=2 if c.prefetch else 0)


def resolve_splits(recipe: ResolvedRecipe, cohort: Cohort, available: set[str]) -> list[Split]:
    c = recipe.cohort
    rows = [r for r in cohort.rows if r["slide_id"] in available]
    if c.splits == "given" and c.splits_file is not None:
        splits = load_splits(c.splits_file, {r["slide_id"] for r in cohort.rows})
    elif c.splits == "given" or (cohort.given_splits is not None and c.splits == "holdout"):
        if cohort.given_splits is None:
            raise DataError("splits = 'given' needs [cohort] splits_file or HistGen annotations")
        splits = [dict(cohort.given_splits)]
    else:
        splits = make_splits(rows, mode=c.splits, seed=recipe.run.seed, folds=c.folds, val_fraction=c.val_fraction,
                             test_fraction=c.test_fraction, strata=split_strata(recipe, rows))
    return restrict_splits(splits, available)


def split_strata(recipe: ResolvedRecipe, rows: list[dict[str, Any]]) -> list[str] | None:
    """The stratum of each row under ``[cohort] stratify``: ``"auto"`` asks the head (its label, the
    Cox event, quantile bins of a regression target), ``"none"`` none, else that column's values."""
    if recipe.cohort.stratify == "auto":
        return recipe.head.cls.strata(recipe.head.config, rows)
    if recipe.cohort.stratify in (None, "", "none"):
        return None
    return [str(r.get(recipe.cohort.stratify)) for r in rows]


def build_model(recipe: ResolvedRecipe, in_dim: int, target_state: dict[str, Any]) -> MILModel:
    agg = recipe.aggregator.cls(recipe.aggregator.config, in_dim=in_dim)
    head = recipe.head.cls(recipe.head.config, in_dim=agg.out_dim, target_state=target_state)
    return MILModel(agg, head)


def init_aggregator(model: MILModel, recipe: ResolvedRecipe) -> dict[str, Any] | None:
    """``[aggregator] init``: copy another run's aggregator weights (fold 0's selected checkpoint);
    ``freeze``: keep the aggregator's weights (from ``init`` or its own ``weights`` file) fixed."""
    from milkit.transfer import load_aggregator_weights

    init = recipe.aggregator.extra.get("init")
    info: dict[str, Any] | None = None
    if init is not None:
        if not (Path(init) / "metrics.json").is_file() and recipe.aggregator.extra.get("init_recipe"):
            pretrain_first(Path(recipe.aggregator.extra["init_recipe"]), Path(init))
        info = load_aggregator_weights(model.aggregator, Path(init), recipe.aggregator)
    elif model.aggregator.weights_sha256 is not None:  # a slide encoder's published weights
        info = {"weights": str(recipe.aggregator.cls.pretrained_weights(recipe.aggregator.config)),
                "weights_sha256": model.aggregator.weights_sha256}
    if recipe.aggregator.extra.get("freeze"):  # a linear probe: only the head trains
        for p in model.aggregator.parameters():
            p.requires_grad_(False)
        info = {**(info or {}), "frozen": True}
    return info


def pretrain_first(recipe_path: Path, run_dir: Path) -> None:
    """Run ``init_recipe`` into ``run_dir`` (resuming if it was interrupted) before the transfer run."""
    from milkit.plugins import get_plugin_manager
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.registry import build_registries

    log.info("[aggregator] init: %s has no finished run; running %s first", run_dir, recipe_path)
    registries = build_registries(get_plugin_manager())
    resolved = validate_recipe(load_recipe(recipe_path), registries)
    handlers = list(log.handlers)
    run_recipe(resolved, registries, out=run_dir, resume=True, progress=True)
    log.handlers[:] = handlers


def _setup_logging(run_dir: Path) -> logging.Handler:
    if not distributed.is_main():  # only rank 0 writes files
        return logging.NullHandler()
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def start_threads(recipe: ResolvedRecipe, console: Any = None) -> str | None:
    """Set the run's torch threads (``milkit.threads``); the reason when they are fewer than the cores,
    also shown on ``console``."""
    from milkit.threads import explain_choice, govern

    note = explain_choice(govern(recipe.run.threads, adapt=not recipe.run.deterministic))
    if note and console is not None:
        console.print(f"[yellow]note:[/] {note}")
    return note


def run_recipe(recipe: ResolvedRecipe, registries: Registries, *, out: Path | None = None, resume: bool = False,
               progress: bool = True, console: Any = None) -> Path:
    """Run a validated recipe end to end; returns the run dir. ``resume`` continues an interrupted
    run (refused when the run dir was started with a different recipe)."""
    run_dir = Path(out) if out is not None else recipe.output_dir
    if resume:
        check_resumable(run_dir, recipe)
    note = start_threads(recipe, console)
    if run_dir.exists() and not resume and distributed.is_main():
        for stale in ("metrics.json", "predictions.csv", "splits.json", "mlflow_runs.json"):
            (run_dir / stale).unlink(missing_ok=True)
        for stale_dir in [*run_dir.glob("fold_*"), run_dir / "tensorboard"]:  # an MLflow store keeps its runs
            shutil.rmtree(stale_dir, ignore_errors=True)
    distributed.barrier()
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _setup_logging(run_dir)
    if note:
        log.warning(note)
    loggers = open_loggers(recipe, run_dir, resume=resume) if recipe.run.loggers and distributed.is_main() \
        else RunLoggers()
    failed = True
    try:
        out = _run(recipe, registries, run_dir, resume=resume, progress=progress, console=console, loggers=loggers)
        failed = False
        return out
    finally:
        loggers.close(failed=failed)
        log.removeHandler(handler)
        handler.close()


def _run(recipe: ResolvedRecipe, registries: Registries, run_dir: Path, *, resume: bool, progress: bool,
         console: Any, loggers: RunLoggers) -> Path:
    started = time.time()
    main = distributed.is_main()
    if main:
        (run_dir / "recipe.toml").write_text(tomli_w.dumps(recipe.to_dict()))
    loggers.start_run(recipe)
    cohort = load_cohort(recipe)
    check_rows(recipe, cohort.rows)
    store, excluded = prepare_bags(recipe, cohort, progress=progress, console=console)
    if recipe.aggregator.cls.pretrained_weights(recipe.aggregator.config) is not None:
        check_feature_source(recipe.aggregator.cls, store)
    cohort, store = bags_for(recipe, cohort, store)
    if main and isinstance(store, CaseBags):
        save_json(run_dir / CASES_FILE, store.members)
    splits_path = run_dir / "splits.json"
    if resume and splits_path.is_file():
        splits = restrict_splits(load_splits(splits_path, set(cohort.by_id)), set(store.paths))
    else:
        splits = resolve_splits(recipe, cohort, set(store.paths))  # deterministic: identical on every rank
        if main:
            save_splits(splits_path, splits, {"mode": recipe.cohort.splits, "seed": recipe.run.seed,
                                              "unit": "case_id (patient)"})
    folds, predictions = train_folds(recipe, store, cohort.by_id, splits, run_dir, resume=resume, progress=progress,
                                     loggers=loggers)
    summary = summarise(folds)
    loggers.end_run(summary)
    metrics = {"milkit_version": __version__, "run": recipe.run.name, "head": recipe.head.name,
               "aggregator": recipe.aggregator.name, "monitor": folds[0]["monitor"],
               "aggregator_init": folds[0].get("init"), "excluded_slides": excluded,
               "n_slides": {part: len(ids) for part, ids in splits[0].items()},
               "folds": [{k: v for k, v in f.items() if k != "records"} for f in folds],
               "summary": summary, "seconds": round(time.time() - started, 1)}
    if main:
        save_json(run_dir / "metrics.json", metrics)
        _write_predictions(run_dir / "predictions.csv", predictions)
        write_visuals(run_dir, registries)
    distributed.barrier()
    log.info("run finished in %.1f s: %s", time.time() - started, run_dir)
    return run_dir


def train_folds(recipe: ResolvedRecipe, store: BagSource, by_id: dict[str, dict[str, Any]], splits: list[Split],
                run_dir: Path, *, resume: bool, progress: bool,
                loggers: RunLoggers | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and evaluate every fold into ``run_dir/fold_<k>``; finished folds are reused when resuming."""
    folds: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    for fold, split in enumerate(splits):
        result = train_fold(recipe, store, by_id, split, run_dir / f"fold_{fold}", fold=fold, resume=resume,
                            progress=progress, loggers=loggers)
        folds.append(result)
        for split_name, records in result["records"].items():
            if split_name in recipe.eval.splits:
                predictions.extend({"fold": fold, "split": split_name, **r} for r in records)
    return folds, predictions


def train_fold(recipe: ResolvedRecipe, store: BagSource, by_id: dict[str, dict[str, Any]], split: Split,
               fold_dir: Path, *, fold: int, resume: bool, progress: bool,
               loggers: RunLoggers | None = None) -> dict[str, Any]:
    """Train one fold (or reuse its result.json when resuming) and return its result; ``loggers`` get
    its epochs and final metrics (a reused fold was logged when it ran)."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    result_path = fold_dir / "result.json"
    if resume and result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("planned_epochs", recipe.train.epochs) == recipe.train.epochs:
            log.info("fold %d: already finished, reusing %s", fold, result_path)
            return done
        log.info("fold %d: [train] epochs changed from %s to %s; continuing from its last checkpoint", fold,
                 done.get("planned_epochs"), recipe.train.epochs)
    seed_everything(recipe.run.seed + fold, recipe.run.deterministic)
    rows = {part: [by_id[s] for s in ids] for part, ids in split.items()}
    target_state = recipe.head.cls.fit_targets(recipe.head.config, rows["train"])
    model = build_model(recipe, store.feature_dim, target_state)
    if distributed.is_main():
        save_json(fold_dir / "target_state.json", target_state)
        save_json(fold_dir / "model.json", {"in_dim": store.feature_dim, "aggregator": recipe.aggregator.name,
                                            "head": recipe.head.name})
    init_info = init_aggregator(model, recipe)
    loggers = loggers or RunLoggers()
    trainer = Trainer(recipe, model, FoldData(rows, store), fold_dir, fold=fold, device=pick_device(recipe.run.device),
                      progress=progress, loggers=loggers)
    result = trainer.evaluate(trainer.fit(resume=resume))
    result["init"] = init_info
    result["planned_epochs"] = recipe.train.epochs
    result["n_parameters"] = sum(p.numel() for p in model.parameters())
    result["n_trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if distributed.is_main():
        save_json(result_path, result)
    loggers.end_fold(fold, result)
    return result


def write_visuals(run_dir: Path, registries: Registries | None = None) -> None:
    """plots/ and report.html; a failure here is logged and never costs the run's results."""
    from milkit.viz import write_run_plots, write_run_report

    try:
        write_run_plots(run_dir, registries=registries)
        path = write_run_report(run_dir, registries=registries)
        log.info("report: %s", path)
    except Exception as exc:  # noqa: BLE001 - the metrics are already written
        log.warning("could not write plots/report.html for %s: %s: %s", run_dir, type(exc).__name__, exc)


def summarise(folds: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and std over folds of every scalar metric, per split."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in folds[0]["metrics"]:
        keys = [k for k, v in folds[0]["metrics"][split].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for key in keys:
            values = np.array([f["metrics"][split].get(key, np.nan) for f in folds], dtype=float)
            out.setdefault(split, {})[key] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else None,
                                              "std": float(np.nanstd(values)) if np.isfinite(values).any() else None}
    return out


def _write_predictions(path: Path, records: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for r in records:
        columns.extend(k for k in r if k not in columns)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def load_run(run_dir: Path, registries: Registries, *, fold: int = 0, device: str = "cpu") -> tuple[MILModel, ResolvedRecipe]:
    """Rebuild a trained model from its run dir (recipe.toml, target_state.json, best/last weights)."""
    from milkit.checkpoint import load_weights
    from milkit.recipe import load_recipe, validate_recipe

    recipe = validate_recipe(load_recipe(run_dir / "recipe.toml"), registries, check_files=False)
    fold_dir = run_dir / f"fold_{fold}"
    target_state = json.loads((fold_dir / "target_state.json").read_text())
    ckpt = fold_dir / "checkpoints" / "best.safetensors"
    if not ckpt.is_file():
        ckpt = fold_dir / "checkpoints" / "last.safetensors"
    in_dim = int(json.loads((fold_dir / "model.json").read_text())["in_dim"])
    model = build_model(recipe, in_dim, target_state)
    load_weights(model, ckpt)
    return model.to(torch.device(device)).eval(), recipe
