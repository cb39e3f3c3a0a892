"""``milkit convert-weights IN --out OUT.safetensors``: a torch checkpoint's tensors -> safetensors.

The input is read with :func:`milkit.weights_file.read_tensors` (weights-only, with milkit's
allow-list plus ``--allow``), so nothing in it is run; the tensors are written atomically.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from milkit.errors import CheckpointError


def flatten_tensors(obj: Mapping, prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """Nested dicts of tensors -> ``{"a.b.c": tensor}``, plus the dotted keys whose value is not a tensor."""
    import torch

    tensors: dict[str, Any] = {}
    other: list[str] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, Mapping):
            sub, rest = flatten_tensors(value, f"{name}.")
            tensors.update(sub)
            other += rest
        else:
            other.append(name)
    return tensors, other


def _entry(obj: Mapping, key: str) -> Any:
    """``obj[key]``, or the nested entry ``key`` names with dots (``model.state_dict``); KeyError if absent."""
    if key in obj:
        return obj[key]
    value: Any = obj
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(key)
        value = value[part]
    return value


def pick_tensors(obj: Mapping, key: str | None, source: Path) -> tuple[dict[str, Any], str | None]:
    """The tensors to write: the top level if it is (a nested dict of) tensors, else entry ``key``
    (default ``state_dict``); returns them with the key used (None for the top level)."""
    top, rest = flatten_tensors(obj)
    if key is None and top and not rest:
        return top, None
    if key is None and "state_dict" not in obj:
        raise CheckpointError(
            f"{source} is not a dict of tensors and has no 'state_dict'; choose the entry that holds the weights "
            f"with --key (top-level keys: {_keys(obj)})")
    key = key or "state_dict"
    try:
        value = _entry(obj, key)
    except KeyError:
        raise CheckpointError(f"{source} has no entry '{key}' (top-level keys: {_keys(obj)})") from None
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{source}: '{key}' holds a {type(value).__name__}, not a dict of tensors "
                              f"(top-level keys: {_keys(obj)})")
    tensors, rest = flatten_tensors(value, "")
    if rest:
        shown = ", ".join(rest[:8]) + (f", ... ({len(rest)} in all)" if len(rest) > 8 else "")
        raise CheckpointError(f"{source}: '{key}' holds values that are not tensors ({shown}); choose the entry "
                              "that holds only the weights with --key")
    if not tensors:
        raise CheckpointError(f"{source}: '{key}' holds no tensors")
    return tensors, key


def _keys(obj: Mapping) -> str:
    keys = [str(k) for k in obj]
    return (", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")) or "none"


def write_safetensors(tensors: dict[str, Any], out: Path, metadata: dict[str, str]) -> None:
    """Contiguous, unshared copies where needed, written atomically (:func:`milkit.atomic.atomic_path`)."""
    import torch
    from safetensors.torch import save_file

    from milkit.atomic import atomic_path

    seen: set[int] = set()
    ready = {}
    for name, t in tensors.items():
        t = t.detach()
        t = (t.to_dense() if t.layout != torch.strided else t).cpu()
        storage = t.untyped_storage()
        if (storage.data_ptr() in seen or not t.is_contiguous()
                or storage.nbytes() != t.numel() * t.element_size()):   # shared, strided or a view: copy
            t = t.contiguous().clone()
        seen.add(t.untyped_storage().data_ptr())
        ready[name] = t
    with atomic_path(out) as tmp:                        # temp file beside `out`, then os.replace
        save_file(ready, str(tmp), metadata=metadata)


def register(app: typer.Typer) -> None:
    """Add ``convert-weights`` to the app."""

    @app.command("convert-weights")
    def convert_weights(
        source: Annotated[Path, typer.Argument(
            metavar="IN", help="A torch checkpoint (.pt/.pth/.bin) or a safetensors file.")],
        out: Annotated[Path, typer.Option("--out", help="The .safetensors file to write.")],
        key: Annotated[str | None, typer.Option(
            "--key", help="Entry holding the weights when the top level is not a dict of tensors "
                          "(default: 'state_dict' if present; dots reach nested entries).")] = None,
        allow: Annotated[list[str] | None, typer.Option(
            "--allow", metavar="module.Name",
            help="Also allow this class in the file's pickle (repeatable); only plain data classes you trust.",
        )] = None,
    ) -> None:
        """Write the tensors of a checkpoint as safetensors, without running anything the file contains."""
        from milkit import cli_options
        from milkit.weights_file import read_tensors

        out = cli_options.out_file(out)
        if out.exists() and source.exists() and out.resolve() == source.resolve():
            raise CheckpointError(f"--out {out} is the input file; write the safetensors copy to another path")
        obj = read_tensors(source, allow=allow or ())
        tensors, used = pick_tensors(obj, key, source)
        write_safetensors(tensors, out, {"source": source.name, "written_by": "milkit convert-weights"})
        params = sum(t.numel() for t in tensors.values())
        where = f" ('{used}')" if used else ""
        typer.echo(f"wrote {out}: {len(tensors)} tensors, {params:,} parameters, from {source}{where}")
