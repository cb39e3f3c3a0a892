"""Helpers for the viewer tests: a small pyramidal slide, a trained run whose patches lie on it, a report run."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np

PS = 224
"""Patch side of the synthetic cohort (tests/conftest.py writes an 8 x 8 grid of 224 px patches)."""


def _root_conftest():
    spec = importlib.util.spec_from_file_location("milkit_tests_conftest_view", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_slide(path: Path, width: int = 2048, height: int = 1792, seed: int = 0) -> Path:
    """A JPEG-tiled pyramidal TIFF (levels 1x and 4x) with a left-to-right colour ramp and dark nuclei, so
    screenshots show where the viewport is."""
    import cv2
    import tifffile

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    pink, purple = np.array([235, 170, 200], np.float32), np.array([170, 110, 190], np.float32)
    img = np.broadcast_to((1 - x) * pink + x * purple, (height, width, 3)).astype(np.uint8).copy()
    for cx, cy in rng.integers(0, [width, height], (1500, 2)):
        cv2.circle(img, (int(cx), int(cy)), 5, (90, 40, 130), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"tile": (256, 256), "photometric": "rgb", "compression": "jpeg"}
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", **opts)
        small = cv2.resize(img, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
        tif.write(small, subfiletype=1, **opts)
    return path


def write_tissue(features_dir: Path, slide_id: str, box: tuple[float, float, float, float]) -> Path:
    """A segmentation GeoJSON (as milkit extract writes it) with one rectangular tissue piece and a hole."""
    x0, y0, x1, y1 = box
    outer = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    hole = [[x0 + 50, y0 + 50], [x0 + 150, y0 + 50], [x0 + 150, y0 + 150], [x0 + 50, y0 + 50]]
    doc = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
        "type": "Polygon", "coordinates": [outer, hole]}, "properties": {"objectType": "annotation"}}]}
    path = features_dir / "segmentation" / f"{slide_id}.geojson"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


RECIPE = """\
[run]
name = "{name}"
seed = 3

[cohort]
csv = "{csv}"
val_fraction = 0.25
test_fraction = 0.25

[aggregator]
name = "abmil"
embed_dim = 16

[head]
name = "{head}"

[train]
epochs = {epochs}
batch_size = 8
lr = 2e-2
"""


def train_run(root: Path, registries, *, name: str = "view <run>", epochs: int = 1, seed: int = 0) -> Path:
    """A really trained ABMIL classification run on the synthetic cohort (run dir ``root/run``), without
    its plots (an empty ``plots/index.json`` instead, so report.html is quick to write)."""
    from unittest import mock

    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe

    csv_path = _root_conftest().write_synthetic_cohort(root / "cohort", seed=seed)
    recipe = root / "recipe.toml"
    recipe.write_text(RECIPE.format(name=name, csv=csv_path, head="classification", epochs=epochs))
    with mock.patch("milkit.runner.write_visuals", lambda *a, **k: None):
        run = run_recipe(validate_recipe(load_recipe(recipe), registries), registries, out=root / "run", progress=False)
    (run / "plots").mkdir(exist_ok=True)
    (run / "plots" / "index.json").write_text('{"items": [], "notes": []}')
    return run


def report_run(root: Path) -> Path:
    """A report run written by hand (no model): predictions with generated and reference reports and a
    finding-agreement field, as a report head writes them."""
    csv_path = _root_conftest().write_synthetic_cohort(root / "cohort")
    run = root / "report_run"
    run.mkdir(parents=True)
    (run / "recipe.toml").write_text(RECIPE.format(name="reports", csv=csv_path, head="classification", epochs=1))
    ids = [f"s{i:03d}" for i in range(36)]
    parts = {"train": ids[:24], "val": ids[24:30], "test": ids[30:]}
    rows = [{"fold": 0, "split": s, "slide_id": sid,
             "generated": f"invasive carcinoma of type {i % 3} . margins clear .",
             "reference": f"invasive carcinoma of type {(i + (i % 2)) % 3} . margins clear .",
             "findings_agreement": round(0.5 + 0.5 * (i % 2 == 0), 2)}
            for s in ("val", "test") for i, sid in enumerate(parts[s])]
    with (run / "predictions.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (run / "splits.json").write_text(json.dumps({"mode": "holdout", "folds": [parts]}))
    (run / "metrics.json").write_text(json.dumps({"run": "reports", "head": "report", "aggregator": "histgen",
                                                  "folds": [], "monitor": "BLEU_4"}))
    return run
