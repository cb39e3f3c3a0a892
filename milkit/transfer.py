"""Initialise an aggregator from another run (e.g. HistGen pre-trained by report generation)."""

import json
from pathlib import Path
from typing import Any

import tomllib
from safetensors.torch import load_file

from milkit.aggregator import Aggregator
from milkit.errors import CheckpointError


def load_aggregator_weights(aggregator: Aggregator, run_dir: Path, component: Any) -> dict[str, Any]:
    """Copy ``run_dir``'s aggregator weights (fold 0, selected checkpoint) into ``aggregator``.

    The source run must use the same aggregator with the same configuration and the same
    feature dimension; otherwise a :class:`CheckpointError` says what differs.
    """
    source = tomllib.loads((run_dir / "recipe.toml").read_text())["aggregator"]
    if source.get("name") != component.name:
        raise CheckpointError(f"[aggregator] init: {run_dir} trained aggregator '{source.get('name')}', "
                              f"this recipe uses '{component.name}'")
    ours = component.config.model_dump(mode="json")
    diffs = {k: (source.get(k), v) for k, v in ours.items() if k in source and source[k] != v}
    if diffs:
        detail = ", ".join(f"{k}: {a!r} there vs {b!r} here" for k, (a, b) in diffs.items())
        raise CheckpointError(f"[aggregator] init: configuration differs from {run_dir}: {detail}")
    fold_dir = run_dir / "fold_0" / "checkpoints"
    path = fold_dir / "best.safetensors"
    if not path.is_file():
        path = fold_dir / "last.safetensors"
    if not path.is_file():
        raise CheckpointError(f"[aggregator] init: no checkpoint in {fold_dir}; did that run finish?")
    tensors = {k.removeprefix("aggregator."): v for k, v in load_file(str(path)).items() if k.startswith("aggregator.")}
    missing, unexpected = aggregator.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"[aggregator] init: {path} does not fit: missing {sorted(missing)[:8]}, "
                              f"unexpected {sorted(unexpected)[:8]}")
    model_json = run_dir / "fold_0" / "model.json"
    in_dim = json.loads(model_json.read_text()).get("in_dim") if model_json.is_file() else None
    if in_dim is not None and in_dim != aggregator.in_dim:
        raise CheckpointError(f"[aggregator] init: {run_dir} was trained on {in_dim}-d features, these are "
                              f"{aggregator.in_dim}-d")
    return {"from": str(run_dir), "checkpoint": str(path), "tensors_loaded": len(tensors),
            "source_head": tomllib.loads((run_dir / "recipe.toml").read_text())["head"]["name"], "frozen": False}
