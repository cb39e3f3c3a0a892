"""Tables for report.html: metrics with CIs, per-fold cost, data summary, comparison rows."""

import math
import statistics
from pathlib import Path
from typing import Any

import h5py

SKIP_KEYS = {"confusion_matrix", "classes", "horizons", "warnings"}


def fmt(v: Any, digits: int = 4) -> str:
    """Numbers to ``digits`` significant figures, None/NaN as 'n/a', everything else as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def _scalar(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _ci(v: Any) -> str:
    return f"[{fmt(v[0])}, {fmt(v[1])}]" if isinstance(v, (list, tuple)) and len(v) == 2 else ""


def metric_rows(metrics: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """(rows of [split, metric, value, 95 % CI, per fold], notes) from ``metrics.json``.

    One fold: the value and its CI (``<key>_ci95``). Several: mean ± std over folds, and
    each fold's value (with CI when recorded) in the last column.
    """
    folds = metrics.get("folds") or []
    summary = metrics.get("summary") or {}
    rows: list[list[str]] = []
    notes: list[str] = []
    splits = list(folds[0]["metrics"]) if folds else list(summary)
    for split in splits:
        per_fold = [f["metrics"].get(split, {}) for f in folds]
        keys = [k for k, v in (per_fold[0] if per_fold else {}).items()
                if k not in SKIP_KEYS and not k.endswith("_ci95") and _scalar(v)]
        for key in keys:
            cis = [m.get(f"{key}_ci95") for m in per_fold]
            if len(folds) == 1:
                rows.append([split, key, fmt(per_fold[0].get(key)), _ci(cis[0]), ""])
            else:
                stat = summary.get(split, {}).get(key, {})
                value = f"{fmt(stat.get('mean'))} ± {fmt(stat.get('std'))}" if stat else "n/a"
                each = "; ".join(f"{i}: {fmt(m.get(key))}{(' ' + _ci(c)) if c else ''}"
                                 for i, (m, c) in enumerate(zip(per_fold, cis)))
                rows.append([split, key, value, "", each])
        for i, m in enumerate(per_fold):
            for text in m.get("warnings") or []:
                notes.append(f"fold {i}, {split}: {text}")
            for k, v in m.items():
                if isinstance(v, str) and k.endswith("reason"):
                    notes.append(f"fold {i}, {split}: {k}: {v}")
    return rows, notes


def cost_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """Per fold: selected epoch, epochs run, s/epoch, peak memory, s/slide, parameters."""
    rows = []
    for f in metrics.get("folds") or []:
        c = f.get("cost") or {}
        rows.append([str(f.get("fold")), f"{f.get('best_epoch')} ({f.get('checkpoint', 'best')})",
                     fmt(c.get("epochs")), fmt(c.get("seconds_per_epoch"), 3), fmt(c.get("peak_memory_mb"), 4),
                     fmt(c.get("inference_seconds_per_slide"), 3), fmt(f.get("n_parameters"))])
    return rows


def count_patches(path: Path) -> int | None:
    """Number of patches in a feature file, read from the HDF5 dataset shape (no data loaded)."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        with h5py.File(path, "r") as f:
            for name in ("features", "feats"):
                if name in f:
                    return int(f[name].shape[0]) if f[name].ndim > 1 else 1
        return None
    from milkit.data.feature_formats import read_bag

    return int(read_bag(path).features.shape[0])


def patch_stats(run_dir: Path, slide_ids: set[str], registries: Any = None) -> dict[str, Any]:
    """min / median / max patches per slide over ``slide_ids`` (feature files found via the recipe)."""
    from milkit.data.bags import find_feature_file
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import features_dir, load_cohort

    if registries is None:
        from milkit.viz.attention import _registries

        registries = _registries()
    recipe = validate_recipe(load_recipe(Path(run_dir) / "recipe.toml"), registries, check_files=False)
    fdir = features_dir(recipe, load_cohort(recipe))
    counts = [n for sid in sorted(slide_ids) if (p := find_feature_file(fdir, sid)) is not None
              and (n := count_patches(p)) is not None]
    if not counts:
        return {"n": 0, "dir": str(fdir)}
    return {"n": len(counts), "min": min(counts), "median": statistics.median(counts), "max": max(counts),
            "total": sum(counts), "dir": str(fdir)}


def comparison_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of ``comparison.json``: primary metric first, then the others and the costs."""
    metric = table["metric"]
    keys: list[str] = []
    for row in table["rows"]:
        keys.extend(k for k, v in row.items() if isinstance(v, dict) and "ci95" in v and k not in keys)
    keys = [metric] + [k for k in keys if k != metric]
    header = ["aggregator", "runs", f"{metric} mean ± std", f"{metric} 95 % CI", "vs best"]
    header += [f"{k} mean ± std" for k in keys[1:]] + ["parameters", "s / epoch", "peak MiB", "s / slide"]
    out = []
    for row in table["rows"]:
        s = row.get(metric) or {}
        vs = row.get("vs_best") or {}
        verdict = "best" if vs.get("is_best") else (
            f"p = {fmt(vs.get('p_value'), 3)}" + (" (within noise)" if vs.get("within_noise") else ""))
        line = [str(row["aggregator"]), fmt(row.get("n_runs")), f"{fmt(s.get('mean'))} ± {fmt(s.get('std'))}",
                _ci(s.get("ci95")), verdict]
        for k in keys[1:]:
            v = row.get(k) or {}
            line.append(f"{fmt(v.get('mean'))} ± {fmt(v.get('std'))}")
        line += [fmt(row.get("n_parameters")), fmt(row.get("seconds_per_epoch"), 3), fmt(row.get("peak_memory_mb"), 4),
                 fmt(row.get("inference_seconds_per_slide"), 3)]
        out.append(line)
    return header, out
