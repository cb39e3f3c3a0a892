"""Read per-slide feature bags in the layouts of milkit, CLAM, TRIDENT, STAMP, slideflow and HistGen; write
milkit's.

Layouts detected by :func:`read_bag`:

* **milkit** (HDF5): datasets ``features`` [N, D] and ``coords`` [N, 2] (level-0 px, top-left),
  attributes on the file root (``milkit_version``, ``mpp``, ``patch_size_level0``, ...).
* **TRIDENT** (HDF5): ``features`` + ``coords``; attributes on the ``coords`` dataset
  (``patch_size_level0``, ``level0_magnification``, ``target_magnification``, ...).
* **CLAM** (HDF5): ``features`` + ``coords`` (level-0 px), few or no attributes.
* **STAMP** (HDF5): ``feats`` + ``coords`` in micrometres (``unit = "um"`` / ``tile_size_um``);
  converted to level-0 px when the slide's mpp is known, otherwise kept and flagged.
* **slideflow** (``<slide>.pt`` + ``<slide>.index.npz`` beside it, ``bags_config.json`` in the
  folder): the tensor, and tile *centres* in level-0 px (``arr_0``); converted to top-left corners
  when the tile size in level-0 px follows from ``tile_um`` and the slide's mpp, otherwise kept
  and flagged ``coords_anchor = "center"``.
* **HistGen / CLAM pt** (``.pt``): a plain [N, D] tensor, no coordinates.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from milkit.atomic import atomic_path
from milkit.errors import DataError

FORMAT_ATTR = "feature_format"
MILKIT_MARKER = "milkit_version"


@dataclass
class Bag:
    """One slide's features: ``features`` float32 [N, D]; ``coords`` float64 [N, 2] level-0 px
    (top-left x, y) or None; ``attrs`` metadata (always has ``feature_format``)."""

    features: np.ndarray
    coords: np.ndarray | None
    attrs: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """h5py attribute values as plain Python (bytes -> str, numpy scalars -> Python, 'None' -> None)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value == "None":  # TRIDENT serialises None as the string 'None'
        return None
    return value


def _attrs(obj: h5py.HLObject) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in obj.attrs.items()}


def read_bag(path: Path | str, *, mpp: float | None = None) -> Bag:
    """Read one slide's feature file, detecting its layout.

    Args:
        path: ``.h5``/``.hdf5`` (milkit, TRIDENT, CLAM, STAMP) or ``.pt`` (HistGen/CLAM tensor,
            slideflow bag when ``<stem>.index.npz`` sits beside it).
        mpp: level-0 micrometres per pixel of the slide, used to convert STAMP's micrometre
            coordinates, and slideflow's tile centres to corners, when the files do not record it.

    Raises:
        DataError: the file is missing, unreadable or in an unknown layout (the message lists
            the datasets found).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature file not found: {path}")
    if path.suffix.lower() in (".pt", ".pth"):
        return _read_pt(path, mpp)
    try:
        with h5py.File(path, "r") as f:
            return _read_h5(path, f, mpp)
    except OSError as exc:
        raise DataError(f"cannot open feature file {path} as HDF5: {exc}") from exc


def _read_pt(path: Path, mpp: float | None) -> Bag:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read {path} as a torch tensor file (weights_only=True): {exc}") from exc
    if isinstance(obj, dict) and "features" in obj:  # some forks save {'features': T, 'coords': T}
        feats, coords = obj["features"], obj.get("coords")
    else:
        feats, coords = obj, None
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2:
        what = f"tensor of shape {tuple(feats.shape)}" if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise DataError(f"{path}: expected a [N, D] tensor (HistGen/CLAM .pt layout), found a {what}")
    features = feats.float().numpy().astype(np.float32, copy=False)
    index = path.with_name(f"{path.stem}.index.npz")
    if index.is_file():
        return _slideflow(path, index, features, mpp)
    coords_np = None if coords is None else np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    return Bag(features, coords_np, {FORMAT_ATTR: "pt"})


def _slideflow(path: Path, index: Path, features: np.ndarray, mpp: float | None) -> Bag:
    """slideflow's feature bag: tile centres from ``index``, tile size from ``bags_config.json``."""
    import json

    try:
        with np.load(index) as npz:
            centres = np.asarray(npz[npz.files[0]], dtype=np.float64).reshape(-1, 2)
    except Exception as exc:
        raise DataError(f"cannot read slideflow tile locations {index}: {exc}") from exc
    if len(centres) != len(features):
        raise DataError(f"{path}: {len(features)} feature rows but {len(centres)} locations in {index.name}")
    attrs: dict[str, Any] = {FORMAT_ATTR: "slideflow"}
    config_path = path.parent / "bags_config.json"
    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {config_path}: {exc}") from exc
        encoder_info = config.get("extractor")  # slideflow's description of its encoder
        if isinstance(encoder_info, dict) and encoder_info.get("class"):
            attrs["extractor"] = encoder_info["class"]
        for key, name in (("tile_px", "tile_size_px"), ("tile_um", "tile_um")):
            if config.get(key) is not None:
                attrs[name] = config[key]
    tile_um = config.get("tile_um")
    if mpp is not None and isinstance(tile_um, (int, float)):
        ps0 = float(tile_um) / float(mpp)
        attrs.update(patch_size_level0=int(round(ps0)), mpp=float(mpp), coords_anchor="top-left")
        return Bag(features, centres - ps0 / 2, attrs)
    attrs["coords_anchor"] = "center"  # flagged: the tile size in level-0 px needs tile_um and the mpp
    return Bag(features, centres, attrs)


def _read_h5(path: Path, f: h5py.File, mpp: float | None) -> Bag:
    names = sorted(f.keys())
    root = _attrs(f)
    if "features" in f:
        feats = np.asarray(f["features"][()], dtype=np.float32)
        coords = np.asarray(f["coords"][()], dtype=np.float64) if "coords" in f else None
        attrs = {**_attrs(f["features"]), **(_attrs(f["coords"]) if "coords" in f else {}), **root}
        if MILKIT_MARKER in root:
            fmt = "milkit"
        elif "coords" in f and ("patch_size_level0" in attrs or "level0_magnification" in attrs):
            fmt = "trident"
        else:
            fmt = "clam"
    elif "feats" in f:
        feats = np.asarray(f["feats"][()], dtype=np.float32)
        coords = np.asarray(f["coords"][()], dtype=np.float64) if "coords" in f else None
        attrs, fmt = dict(root), "stamp"
        coords = _stamp_coords(coords, attrs, mpp)
    else:
        raise DataError(
            f"{path}: unknown feature-file layout; datasets found: {', '.join(names) or '(none)'}. "
            "Expected 'features' (+ 'coords') as written by milkit, CLAM or TRIDENT, or 'feats' + 'coords' "
            "(STAMP); re-extract with `milkit extract` if the file comes from another tool"
        )
    if feats.ndim == 1:
        raise DataError(f"{path}: features are one vector of length {feats.shape[0]} (a slide-level embedding?), "
                        "not a bag; a bag is [N patches, D] per slide: extract patch features with `milkit extract`")
    if feats.ndim != 2:
        raise DataError(f"{path}: features have shape {tuple(feats.shape)}; expected [N patches, D features]")
    if coords is not None:
        coords = coords.reshape(-1, 2)
        if len(coords) != len(feats):
            raise DataError(f"{path}: {len(feats)} feature rows but {len(coords)} coordinates")
    attrs[FORMAT_ATTR] = fmt
    return Bag(feats, coords, attrs)


def _stamp_coords(coords: np.ndarray | None, attrs: dict[str, Any], mpp: float | None) -> np.ndarray | None:
    """STAMP stores top-left corners in micrometres; level-0 px = um / mpp."""
    in_um = attrs.get("unit") == "um" or "tile_size_um" in attrs
    if coords is None or not in_um:
        attrs["coords_unit"] = "px" if coords is not None else None
        return coords
    mpp = mpp if mpp is not None else attrs.get("mpp")
    if mpp is None:
        attrs["coords_unit"] = "um"  # flagged: caller must convert (pass mpp=...)
        return coords
    attrs["coords_unit"] = "px"
    attrs["mpp"] = float(mpp)
    return coords / float(mpp)


def write_bag(path: Path | str, features: np.ndarray, coords: np.ndarray | None, attrs: dict[str, Any]) -> None:
    """Write a milkit feature file atomically (temp file in the same folder, then ``os.replace``).

    ``features`` is stored as given if float16, else float32; ``coords`` as int64 level-0 px.
    ``None`` attribute values are skipped. A reader never sees a half-written file.
    """
    from milkit import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    feats = np.asarray(features)
    feats = feats if feats.dtype == np.float16 else feats.astype(np.float32, copy=False)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        f.create_dataset("features", data=feats, track_times=False)
        if coords is not None:
            c = np.rint(np.asarray(coords, dtype=np.float64)).astype(np.int64).reshape(-1, 2)
            f.create_dataset("coords", data=c, track_times=False)
        f.attrs[MILKIT_MARKER] = __version__
        for key, value in sorted(attrs.items()):
            if value is not None and key != MILKIT_MARKER:
                f.attrs[key] = value
