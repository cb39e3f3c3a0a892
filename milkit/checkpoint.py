"""Checkpoints as safetensors + JSON (no pickle anywhere on load), written atomically."""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from milkit.atomic import atomic_path
from milkit.errors import CheckpointError


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def save_json(path: Path, data: Any) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(data, indent=1, default=str)))


def save_weights(model: nn.Module, path: Path) -> None:
    """Model weights only (shared tensors handled by safetensors' save_model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda p: save_model(model, str(p)))


def load_weights(model: nn.Module, path: Path, *, strict: bool = True) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    missing, unexpected = load_model(model, str(path), strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path} does not fit this model: missing keys {sorted(missing)[:8]}, unexpected keys {sorted(unexpected)[:8]}"
        )


def save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, meta: dict[str, Any]) -> None:
    """Weights (``path``), optimizer tensors (``*.optim.safetensors``) and JSON (``*.json``).

    The JSON is written last, so its presence marks a complete checkpoint.
    """
    save_weights(model, path)
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    tensors["__rng_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["__rng_cuda"] = torch.cuda.get_rng_state()
    optim_path = path.with_name(path.name.replace(".safetensors", ".optim.safetensors"))
    _atomic(optim_path, lambda p: save_file(tensors, str(p)))
    meta = {**meta, "param_groups": opt["param_groups"], "optimizer_scalars": scalars,
            "scheduler": scheduler.state_dict() if scheduler is not None else None}
    save_json(path.with_suffix(".json"), meta)


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote; returns its JSON metadata."""
    meta = json.loads(path.with_suffix(".json").read_text())
    load_weights(model, path)
    tensors = load_file(str(path.with_name(path.name.replace(".safetensors", ".optim.safetensors"))))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("__rng"):
            continue
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["__rng_cpu"])
    if "__rng_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["__rng_cuda"])
    return meta
