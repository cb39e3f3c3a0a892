"""CHIEF, MADELEINE, FEATHER and PRISM refuse bags of another extractor's features before training, naming the
extractor to use, and accept their own (milkit.data.feature_check.check_feature_source)."""

from pathlib import Path

import numpy as np
import pytest

from milkit.aggregator import Aggregator
from milkit.components.aggregators.chief import CHIEF
from milkit.components.aggregators.feather import FEATHER
from milkit.components.aggregators.madeleine import MADELEINE
from milkit.components.aggregators.prism import PRISM
from milkit.data.bags import BagStore
from milkit.data.feature_check import check_feature_source
from milkit.data.feature_formats import write_bag
from milkit.errors import DataError

EXPECTED = {CHIEF: ("ctranspath", 768), MADELEINE: ("conch-v1", 512), FEATHER: ("conch-v1.5", 768),
            PRISM: ("virchow", 2560)}
"""The published pairing (TRIDENT's slide_to_patch_encoder_name; Virchow: class token + mean patch token)."""


def store(root: Path, extractor: str | None, dim: int, n_slides: int = 3) -> BagStore:
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(n_slides):
        paths[f"s{i}"] = root / f"s{i}.h5"
        write_bag(paths[f"s{i}"], rng.standard_normal((4, dim)).astype(np.float32), np.zeros((4, 2)),
                  {"extractor": extractor})                       # None: a file that does not say (skipped)
    return BagStore(paths, prefetch_workers=0)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.name)
def test_the_right_extractor_is_accepted_and_another_refused(tmp_path: Path, cls: type[Aggregator]) -> None:
    name, dim = EXPECTED[cls]
    assert cls.expected_features is not None
    assert (cls.expected_features.encoders, cls.expected_features.dim) == ((name,), dim)
    check_feature_source(cls, store(tmp_path / "right", name, dim))
    other = "uni" if name != "uni" else "phikon"
    with pytest.raises(DataError, match=rf"aggregator '{cls.name}' loads weights trained on '{name}' features "
                       rf"\({dim} wide\), but 3 slide\(s\) have features from '{other}'.*--extractor {name}"):
        check_feature_source(cls, store(tmp_path / "other", other, dim))
    with pytest.raises(DataError, match=rf"expects {dim}-wide '{name}' features, but the cohort's are 16 wide"):
        check_feature_source(cls, store(tmp_path / "unsaid", None, 16))   # no extractor attribute: the width
