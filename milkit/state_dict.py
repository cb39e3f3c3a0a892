"""Load component weights (patch and slide encoders) from a local file: safetensors or torch
(``weights_only=True``), with key checks."""

import hashlib
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor, nn

from milkit.errors import CheckpointError
from milkit.weights_file import read_tensors

WRAPPER_KEYS = ("state_dict", "model", "teacher", "module", "model_state_dict")


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: Path | str) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` file, unwrapped from common
    wrappers (``state_dict``, ``model``, ``teacher``, ...). Never unpickles arbitrary objects: the
    file is read by :func:`milkit.weights_file.read_tensors` (what it is decides how, not its name)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}; set `weights` in the recipe's [extractor] or "
                              "[aggregator] table")
    obj = read_tensors(path)
    while isinstance(obj, dict):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no tensors found; top-level keys: {', '.join(map(str, obj))[:300]}")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def strip_prefix(state: dict[str, Tensor], prefixes: Iterable[str]) -> dict[str, Tensor]:
    """Remove the first matching prefix (e.g. ``module.``, ``backbone.``) when every key has it."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_checked(module: nn.Module, state: dict[str, Tensor], *, source: str,
                 ignore: Iterable[str] = ()) -> None:
    """``module.load_state_dict(strict)`` after dropping keys that start with one of ``ignore``;
    missing, unexpected or mis-shaped keys raise CheckpointError listing them."""
    ignore = tuple(ignore)
    state = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")

        parts = [f"missing keys: {show(missing)}" if missing else "",
                 f"unexpected keys: {show(unexpected)}" if unexpected else "",
                 f"shape mismatches: {show(shapes)}" if shapes else ""]
        raise CheckpointError(
            f"weights {source} do not fit {type(module).__name__}: " + "; ".join(p for p in parts if p)
            + ". Check the encoder's config (sizes, mlp type, registers) matches the checkpoint")
    module.load_state_dict(state, strict=True)
