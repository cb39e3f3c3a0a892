"""The bag store: lazy reads, byte-bounded LRU cache, prefetch, fp16 storage, bad-bag errors."""

import h5py
import numpy as np
import pytest
import torch

from milkit.data.bags import BagStore, collate_bags
from milkit.errors import DataError


def write(path, n, d=8, seed=0):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["features"] = rng.normal(size=(n, d)).astype("float32")
        f["coords"] = np.arange(2 * n).reshape(n, 2) * 224


@pytest.fixture
def paths(tmp_path):
    out = {}
    for i in range(6):
        write(tmp_path / f"s{i}.h5", 100 + i, seed=i)
        out[f"s{i}"] = tmp_path / f"s{i}.h5"
    return out


def test_lru_cache_stays_within_budget(paths):
    one_bag_mib = 105 * 8 * 4 / 2**20
    store = BagStore(paths, cache_mb=2.5 * one_bag_mib, prefetch_workers=0)
    for sid in paths:
        store.load(sid)
    assert len(store._bags) == 2 and list(store._bags) == ["s4", "s5"]
    assert store._held <= store.cache_bytes
    before = store.bytes_read
    store.load("s5")
    assert store.bytes_read == before  # a hit reads nothing
    store.load("s0")
    assert store.bytes_read > before and "s4" not in store._bags  # least recently used dropped


def test_prefetch_returns_the_same_bags(paths):
    plain = BagStore(paths, cache=False, prefetch_workers=0)
    pre = BagStore(paths, cache=False, prefetch_workers=2)
    pre.prefetch(list(paths))
    for sid in paths:
        a, b = plain.load(sid), pre.load(sid)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not pre._pending


def test_fp16_storage_halves_bytes_and_keeps_values(paths, tmp_path):
    full = BagStore(paths, prefetch_workers=0)
    half = BagStore(paths, fp16_dir=tmp_path / "fp16", prefetch_workers=0)
    a, b = full.load("s3")[0], half.load("s3")[0]
    assert b.dtype == torch.float32 and torch.allclose(a, b, atol=1e-2, rtol=1e-3)
    assert (tmp_path / "fp16" / "s3.h5").is_file()
    assert half.bytes_read * 2 == full.bytes_read
    assert half._bags["s3"][0].dtype == torch.float16  # the cache holds half precision


def test_bad_bags_name_the_slide(tmp_path):
    write(tmp_path / "empty.h5", 0)
    with pytest.raises(DataError, match="slide empty: .* holds no patches"):
        BagStore({"empty": tmp_path / "empty.h5"}).load("empty")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="junk"):
        BagStore({"junk": tmp_path / "junk.h5"}).load("junk")


def test_collate_pads_and_masks():
    bags = collate_bags([(torch.ones(3, 2), torch.zeros(3, 2)), (torch.ones(1, 2), torch.zeros(1, 2))])
    assert bags.feats.shape == (2, 3, 2) and bags.mask.tolist() == [[True] * 3, [True, False, False]]
    assert bags.feats[1, 1:].abs().sum() == 0
