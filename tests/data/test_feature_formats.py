"""read_bag detects milkit, CLAM, TRIDENT, STAMP, slideflow and HistGen .pt layouts; write_bag is atomic and stable."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from milkit.data.feature_formats import read_bag, write_bag
from milkit.errors import DataError

FEATS = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
COORDS = np.array([[0, 0], [256, 0], [0, 256], [256, 256]])


def test_milkit_roundtrip_is_atomic_and_byte_stable(tmp_path: Path) -> None:
    write_bag(tmp_path / "a.h5", FEATS, COORDS, {"mpp": 0.25, "extractor": "x", "skip": None})
    write_bag(tmp_path / "b.h5", FEATS, COORDS, {"mpp": 0.25, "extractor": "x", "skip": None})
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5"]          # no temp files left
    bag = read_bag(tmp_path / "a.h5")
    assert bag.attrs["feature_format"] == "milkit" and bag.attrs["mpp"] == 0.25 and "skip" not in bag.attrs
    np.testing.assert_array_equal(bag.features, FEATS)
    assert bag.coords.dtype == np.float64 and (bag.coords == COORDS).all()
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["coords"].dtype == np.int64 and f["features"].dtype == np.float32


def test_write_keeps_float16(tmp_path: Path) -> None:
    write_bag(tmp_path / "h.h5", FEATS.astype(np.float16), COORDS, {})
    with h5py.File(tmp_path / "h.h5") as f:
        assert f["features"].dtype == np.float16
    assert read_bag(tmp_path / "h.h5").features.dtype == np.float32


def test_clam_layout(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "clam.h5", "w") as f:
        f["features"] = FEATS
        f["coords"] = COORDS.astype(np.int32)
    bag = read_bag(tmp_path / "clam.h5")
    assert bag.attrs["feature_format"] == "clam" and (bag.coords == COORDS).all()


def test_trident_layout_attrs_come_from_the_datasets(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("features", data=FEATS).attrs.update({"name": "t", "savetodir": "x"})
        c = f.create_dataset("coords", data=COORDS.astype(np.int64))
        c.attrs.update({"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40,
                        "target_magnification": 20, "overlap": 0, "name": "t", "savetodir": "None"})
    bag = read_bag(tmp_path / "t.h5")
    assert bag.attrs["feature_format"] == "trident"
    assert bag.attrs["patch_size_level0"] == 512 and bag.attrs["level0_magnification"] == 40
    assert bag.attrs["savetodir"] is None                                     # TRIDENT's 'None' string


def _stamp(path: Path, **attrs) -> Path:
    with h5py.File(path, "w") as f:
        f["feats"] = FEATS.astype(np.float16)
        f["coords"] = COORDS * 0.5                                              # micrometres
        f.attrs.update({"stamp_version": "2.5.0", "extractor": "uni", "unit": "um", "tile_size_um": 256.0,
                        "tile_size_px": 224, **attrs})
    return path


def test_stamp_um_coords_converted_when_mpp_known(tmp_path: Path) -> None:
    bag = read_bag(_stamp(tmp_path / "s.h5"), mpp=0.5)
    assert bag.attrs["feature_format"] == "stamp" and bag.attrs["coords_unit"] == "px"
    np.testing.assert_allclose(bag.coords, COORDS)
    assert bag.features.dtype == np.float32
    assert read_bag(_stamp(tmp_path / "m.h5", mpp=0.25)).coords[1, 0] == 512.0   # mpp from the file


def test_stamp_without_mpp_keeps_um_and_flags_it(tmp_path: Path) -> None:
    bag = read_bag(_stamp(tmp_path / "s.h5"))
    assert bag.attrs["coords_unit"] == "um"
    np.testing.assert_allclose(bag.coords, COORDS * 0.5)


def test_histgen_pt_is_a_plain_tensor(tmp_path: Path) -> None:
    torch.save(torch.from_numpy(FEATS), tmp_path / "slide.pt")
    bag = read_bag(tmp_path / "slide.pt")
    assert bag.coords is None and bag.attrs["feature_format"] == "pt"
    np.testing.assert_array_equal(bag.features, FEATS)


def test_unknown_layout_names_file_and_datasets(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "odd.h5", "w") as f:
        f["embeddings"] = FEATS
        f["xy"] = COORDS
    with pytest.raises(DataError, match=r"odd\.h5.*datasets found: embeddings, xy"):
        read_bag(tmp_path / "odd.h5")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_bag(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="HDF5"):
        read_bag(tmp_path / "junk.h5")
    torch.save(torch.zeros(3), tmp_path / "vec.pt")
    with pytest.raises(DataError, match=r"\[N, D\]"):
        read_bag(tmp_path / "vec.pt")
    with h5py.File(tmp_path / "n.h5", "w") as f:
        f["features"] = FEATS
        f["coords"] = COORDS[:2]
    with pytest.raises(DataError, match="4 feature rows but 2 coordinates"):
        read_bag(tmp_path / "n.h5")


def write_slideflow(folder: Path, centres: np.ndarray, tile_um: object = 112) -> Path:
    """A slideflow feature bag: <slide>.pt, <slide>.index.npz (tile centres, key arr_0), bags_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(torch.from_numpy(FEATS), folder / "slide.pt")
    np.savez(folder / "slide.index.npz", centres)
    config = {"extractor": {"class": "slideflow.model.extractors.retccl.RetCCLFeatures", "kwargs": {}},
              "normalizer": None, "num_features": FEATS.shape[1], "tile_px": 224, "tile_um": tile_um}
    (folder / "bags_config.json").write_text(json.dumps(config))
    return folder / "slide.pt"


def test_slideflow_centres_become_corners_when_mpp_is_known(tmp_path: Path) -> None:
    centres = COORDS + 112.0
    path = write_slideflow(tmp_path, centres)
    bag = read_bag(path, mpp=0.5)                       # 112 um at 0.5 um/px = 224 level-0 px
    assert bag.attrs["feature_format"] == "slideflow" and bag.attrs["patch_size_level0"] == 224
    assert bag.attrs["extractor"].endswith("RetCCLFeatures") and bag.attrs["coords_anchor"] == "top-left"
    np.testing.assert_array_equal(bag.coords, COORDS)
    np.testing.assert_array_equal(bag.features, FEATS)
    unknown = read_bag(path)                            # no mpp: centres kept and flagged
    assert unknown.attrs["coords_anchor"] == "center"
    np.testing.assert_array_equal(unknown.coords, centres)
    magnification = read_bag(write_slideflow(tmp_path / "mag", centres, tile_um="20x"), mpp=0.5)
    assert magnification.attrs["coords_anchor"] == "center" and magnification.attrs["tile_um"] == "20x"


def test_slideflow_location_count_must_match(tmp_path: Path) -> None:
    path = write_slideflow(tmp_path, COORDS[:-1])
    with pytest.raises(DataError, match=r"slide\.pt: \d+ feature rows but \d+ locations in slide\.index\.npz"):
        read_bag(path)
