"""Refuse bags a pretrained slide encoder was not trained on (``Aggregator.expected_features``)."""

from pathlib import Path

import h5py

from milkit.aggregator import Aggregator
from milkit.data.bags import BagStore
from milkit.errors import DataError


def extractor_of(path: Path) -> str | None:
    """The milkit extractor that wrote a feature file (its ``extractor`` attribute), None when the
    file does not say (CLAM, TRIDENT, STAMP, .pt files)."""
    if path.suffix.lower() not in (".h5", ".hdf5"):
        return None
    try:
        with h5py.File(path, "r") as f:
            name = f.attrs.get("extractor")
    except OSError:
        return None  # unreadable files are the screen's business
    return name.decode() if isinstance(name, bytes) else (str(name) if name is not None else None)


def check_feature_source(aggregator: type[Aggregator], store: BagStore) -> None:
    """Raise DataError when ``aggregator`` declares ``expected_features`` and any bag of ``store`` was
    made by another extractor or has another width; the message says which extractor to use.
    Callers check aggregators that load published weights (a randomly initialised slide encoder is
    just an architecture, trained on whatever features it is given)."""
    spec = aggregator.expected_features
    if spec is None or not store.paths:
        return
    wanted = " or ".join(f"'{e}'" for e in spec.encoders)
    fix = (f"extract with `milkit extract <slides> --out <dir> --extractor {spec.encoders[0]}` and set "
           "[cohort] features_dir to that folder")
    others = {sid: name for sid, path in store.paths.items()
              if (name := extractor_of(Path(path))) is not None and name not in spec.encoders}
    if others:
        sid, name = next(iter(others.items()))
        raise DataError(f"aggregator '{aggregator.name}' loads weights trained on {wanted} features ({spec.dim} "
                        f"wide), but {len(others)} slide(s) have features from '{name}' (e.g. slide {sid}: "
                        f"{store.paths[sid]}); {fix}")
    if store.feature_dim != spec.dim:
        raise DataError(f"aggregator '{aggregator.name}' expects {spec.dim}-wide {wanted} features, but the "
                        f"cohort's are {store.feature_dim} wide; {fix}")
