"""Helpers for the visualisation tests: trained and hand-made run dirs, PNG checks."""

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _root_conftest():
    """tests/conftest.py loaded by path (the tests folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("milkit_tests_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_synthetic_cohort = _root_conftest().write_synthetic_cohort

RECIPE = """\
[run]
name = "{name}"
seed = 3

[cohort]
csv = "{csv}"
val_fraction = 0.25
test_fraction = 0.25

[aggregator]
name = "{agg}"
embed_dim = 16

[head]
name = "{head}"

[train]
epochs = {epochs}
batch_size = 8
lr = 2e-2
"""


def train_run(root: Path, registries, *, agg: str = "abmil", head: str = "classification", epochs: int = 3,
              name: str = "viz <test> & run") -> Path:
    """A really trained run on the synthetic cohort (no slide files: heatmaps use a blank canvas)."""
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe

    csv_path = write_synthetic_cohort(root / "cohort")
    recipe = root / f"{agg}.toml"
    recipe.write_text(RECIPE.format(name=name, csv=csv_path, agg=agg, head=head, epochs=epochs))
    return run_recipe(validate_recipe(load_recipe(recipe), registries), registries, out=root / f"run_{agg}",
                      progress=False)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def fake_run(root: Path, task: str, *, folds: int = 1, train_records: bool = True, seed: int = 0) -> Path:
    """A run dir written by hand (no training): metrics.json, predictions.csv, splits.json,
    fold_<k>/metrics.jsonl and fold_<k>/result.json, in the layout milkit.runner writes."""
    rng = np.random.default_rng(seed)
    run = root / f"fake_{task}"
    run.mkdir(parents=True)
    csv_path = write_synthetic_cohort(root / "cohort")
    head = {"classification": "classification", "survival": "cox", "report": "report"}[task]
    (run / "recipe.toml").write_text(RECIPE.format(name=f"fake {task}", csv=csv_path, agg="abmil", head=head, epochs=4))
    preds, fold_results, splits = [], [], []
    for fold in range(folds):
        ids = [f"s{i:03d}" for i in rng.permutation(36)]
        parts = {"train": ids[:20], "val": ids[20:27], "test": ids[27:]}
        splits.append(parts)
        records = {part: [_record(task, sid, rng) for sid in sids] for part, sids in parts.items()}
        if not train_records:
            records.pop("train")
        preds += [{"fold": fold, "split": s, **r} for s in ("val", "test") for r in records[s]]
        metrics = {s: _metrics(task, fold, rng) for s in ("val", "test")}
        fold_results.append({"fold": fold, "checkpoint": "best", "best_epoch": 3, "monitor": "m", "metrics": metrics,
                             "cost": {"epochs": 4, "seconds_per_epoch": 0.5, "peak_memory_mb": 12.0,
                                      "inference_seconds_per_slide": 0.01}, "n_parameters": 1234})
        fold_dir = run / f"fold_{fold}"
        fold_dir.mkdir()
        (fold_dir / "result.json").write_text(json.dumps({**fold_results[-1], "records": records}))
        epochs = [{"fold": fold, "epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_m": 0.5 + 0.1 * e}
                  for e in range(1, 5)]
        (fold_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    _write_csv(run / "predictions.csv", preds)
    (run / "splits.json").write_text(json.dumps({"mode": "holdout", "folds": splits}))
    summary = {s: {k: {"mean": float(np.mean([f["metrics"][s][k] for f in fold_results])),
                       "std": float(np.std([f["metrics"][s][k] for f in fold_results]))}
                   for k, v in fold_results[0]["metrics"][s].items() if isinstance(v, float)} for s in ("val", "test")}
    (run / "metrics.json").write_text(json.dumps({
        "milkit_version": "0.1.0", "run": f"fake {task}", "head": head, "aggregator": "abmil", "monitor": "m",
        "n_slides": {k: len(v) for k, v in splits[0].items()}, "folds": fold_results, "summary": summary,
        "seconds": 12.5}))
    return run


def _record(task: str, sid: str, rng: np.random.Generator) -> dict[str, Any]:
    if task == "classification":
        target = f"c{int(sid[1:]) % 3}"
        p = rng.dirichlet(np.ones(3))
        p[int(target[1])] += 1.0
        p /= p.sum()
        return {"slide_id": sid, "target": target, "pred": f"c{int(p.argmax())}",
                **{f"prob_c{i}": float(v) for i, v in enumerate(p)}}
    if task == "survival":
        risk = float(rng.normal())
        return {"slide_id": sid, "time": float(rng.exponential(10 * np.exp(-risk)) + 0.1),
                "event": int(rng.random() < 0.7), "risk": risk}
    words = ["tumor", "grade", "invasive", "margin", "clear", "node"]
    ref = " ".join(rng.choice(words, 6))
    return {"slide_id": sid, "generated": ref if sid.endswith("1") else " ".join(rng.choice(words, 5)),
            "reference": ref, "truncated": False}


def _metrics(task: str, fold: int, rng: np.random.Generator) -> dict[str, Any]:
    m = 0.7 + 0.05 * fold + 0.01 * float(rng.random())
    base = {"m": m, "m_ci95": [m - 0.1, m + 0.1], "n": 9}
    if task == "survival":
        base["warnings"] = ["ibs: NaN (follow-up outside the training range)"]
        base["horizons"] = [2.0, 5.0, 8.0]
    return base


def png_array(path: Path) -> np.ndarray:
    """The PNG as an RGB array (fails if it is not a valid PNG)."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def assert_sensible_png(path: Path, *, min_side: int = 150, min_std: float = 8.0) -> np.ndarray:
    """Valid PNG, at least ``min_side`` px a side, and not blank (pixel std above ``min_std``)."""
    img = png_array(path)
    assert min(img.shape[:2]) >= min_side, img.shape
    assert img.std() > min_std, f"{path.name} looks blank (pixel std {img.std():.1f})"
    return img
