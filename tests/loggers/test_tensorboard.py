"""The TensorBoard tracker: read back with TensorBoard's own EventAccumulator, the values equal the run
dir's metrics.jsonl and metrics.json (at TensorBoard's float32 precision)."""

import json
from pathlib import Path

import numpy as np
import pytest

from milkit.loggers import epoch_scalars, final_scalars

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from trackerhelpers import jsonl  # noqa: E402


def _events(run_dir: Path, fold: int) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard" / f"fold_{fold}"))
    events.Reload()
    return events


def _f32(value: float) -> float:
    return float(np.float32(value))


@pytest.mark.parametrize("fold", [0, 1])
def test_epoch_scalars_equal_metrics_jsonl(tracked_run: Path, fold: int):
    events = _events(tracked_run, fold)
    entries = jsonl(tracked_run, fold)
    expected: dict[str, list[tuple[int, float]]] = {}
    for entry in entries:
        for key, value in epoch_scalars(entry).items():
            expected.setdefault(key, []).append((entry["epoch"], _f32(value)))
    assert {"train/loss", "val/loss", "val/balanced_accuracy", "lr", "seconds"} <= set(expected)
    for key, points in expected.items():
        assert [(e.step, e.value) for e in events.Scalars(key)] == points, key


@pytest.mark.parametrize("fold", [0, 1])
def test_final_metrics_equal_metrics_json(tracked_run: Path, fold: int):
    result = json.loads((tracked_run / "metrics.json").read_text())["folds"][fold]
    events = _events(tracked_run, fold)
    final = final_scalars(result["metrics"])
    assert "final/test/balanced_accuracy" in final
    for key, value in final.items():
        (point,) = events.Scalars(key)
        assert (point.step, point.value) == (result["cost"]["epochs"], _f32(value)), key


def test_one_run_dir_per_fold_with_the_recipe_as_text(tracked_run: Path):
    assert sorted(p.name for p in (tracked_run / "tensorboard").iterdir()) == ["fold_0", "fold_1"]
    (text,) = _events(tracked_run, 0).Tensors("recipe/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    recipe = (tracked_run / "recipe.toml").read_text()
    assert [line.strip() for line in shown.splitlines()] == [line.strip() for line in recipe.splitlines()]
