"""Checks of command-line values for milkit's and plugins' commands: output paths and devices.

Each raises :class:`milkit.errors.UsageError` naming the option, what is wrong and what is
valid, before any work starts. Numeric ranges are declared on the options themselves
(``typer.Option(min=1)``), so click refuses them with exit code 2.
"""

import os
from pathlib import Path

from milkit.errors import UsageError


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_parent(path: Path, option: str) -> None:
    anchor = _existing_ancestor(path.parent)
    if not anchor.is_dir():
        raise UsageError(option, f"{path}: {anchor} is a file, not a folder; choose a path inside a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise UsageError(option, f"{path}: cannot create it, {anchor} is not writable by this user; "
                                 "choose a folder you can write to")


def out_dir(path: Path, option: str = "--out") -> Path:
    """A folder milkit may create or write into (an existing file or an unwritable folder is refused)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(option, f"{path} is an existing file; give a folder (it is created if missing)")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(option, f"{path} is not writable by this user; choose a folder you can write to")
        return path
    _check_writable_parent(path, option)
    return path


def out_file(path: Path, option: str = "--out") -> Path:
    """A file milkit may write (an existing folder, or a file in an unwritable folder, is refused)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(option, f"{path} is a folder; give a file name (e.g. {path / 'out.csv'})")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(option, f"{path} exists and is not writable by this user")
    _check_writable_parent(path, option)
    return path


def device(name: str, option: str = "--device") -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, refused when CUDA (or that device) is absent."""
    if name in ("auto", "cpu"):
        return name
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise UsageError(option, f"unknown device '{name}'; use auto, cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise UsageError(option, f"'{name}' was asked for but this machine has no usable CUDA device "
                                 f"(torch {torch.__version__}); use --device cpu or auto")
    index = int(name[5:]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise UsageError(option, f"'{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA "
                                 f"device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return name
