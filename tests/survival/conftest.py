"""Synthetic survival records shared by the survival tests."""

from collections.abc import Callable

import numpy as np
import pytest


def synthetic_records(n: int, seed: int, strength: float = 2.0) -> list[dict]:
    """Exponential event times with hazard exp(strength * risk): higher risk => earlier event."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t_event = rng.exponential(np.exp(-strength * risk))
    t_cens = rng.exponential(2.0, n)
    return [{"slide_id": f"s{i}", "time": float(min(a, c)), "event": int(a <= c), "risk": float(r)}
            for i, (a, c, r) in enumerate(zip(t_event, t_cens, risk))]


@pytest.fixture
def synthetic() -> Callable[..., list[dict]]:
    """``synthetic(n, seed, strength=2.0)`` -> records with ``time``, ``event``, ``risk``."""
    return synthetic_records
