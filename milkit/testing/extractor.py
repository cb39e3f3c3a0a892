"""Conformance checks every :class:`milkit.Extractor` must pass (shared by milkit's and plugins' tests)."""

from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor

from milkit.config import ComponentConfig
from milkit.extractor import Extractor
from milkit.testing.report import (
    CheckReport,
    assert_close,
    assert_finite,
    
    require,
    skip_set,
)

EXTRACTOR_CHECKS = ("config", "build", "output shapes", "batch independence", "bf16 autocast")


def run_extractor_checks(
    cls: type[Extractor],
    config: ComponentConfig | dict[str, Any] | None = None,
    *,
    atol: float = 1e-4,
    seed: int = 0,
    skip: Collection[str] = (),
) -> CheckReport:
    """Run every extractor check and return the per-check results; never raises for a failed check.

    Tiles are ``[2, 3, tile_size_px, tile_size_px]`` floats in [0, 1]; the extractor runs in eval mode.
    ``skip`` names checks not to run (reported as skipped).
    """
    label = f"extractor '{getattr(cls, 'name', '?')}' ({cls.__qualname__})"
    report = CheckReport(label, skip=skip_set(skip, EXTRACTOR_CHECKS))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        cfg = report.config(cls, config, EXTRACTOR_CHECKS)
        if cfg is None:
            return report
        model = report.run("build", lambda: _build(cls, cls(cfg)))
        if model is None:
            report.skip_rest(list(EXTRACTOR_CHECKS[2:]), "the extractor could not be built")
            return report
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        tiles = torch.rand(2, 3, model.tile_size_px, model.tile_size_px, generator=gen)  # b 3 h w
        report.run("output shapes", lambda: _shapes(model, tiles))
        report.run("batch independence", lambda: _batch_independence(model, tiles, atol, gen))
        report.run("bf16 autocast", lambda: _bf16(model, tiles))
    return report


def check_extractor(
    cls: type[Extractor],
    config: ComponentConfig | dict[str, Any] | None = None,
    *,
    atol: float = 1e-4,
    seed: int = 0,
    skip: Collection[str] = (),
) -> CheckReport:
    """Like :func:`run_extractor_checks`, but raise :class:`CheckFailure` if any check failed."""
    return run_extractor_checks(cls, config, atol=atol, seed=seed, skip=skip).raise_for_failures()



def _build(cls: type, model: Any) -> Extractor:
    require(isinstance(model, Extractor), f"{cls.__qualname__} is not a subclass of milkit.Extractor")
    for attr in ("feature_dim", "tile_size_px"):
        value = getattr(model, attr, None)
        require(isinstance(value, int) and value > 0, f"{attr} must be a positive int, got {value!r}")
    for attr in ("mean", "std"):
        value = getattr(model, attr, None)
        require(value is not None and len(value) == 3, f"{attr} must be three per-channel values, got {value!r}")
    return model


def _run(model: Extractor, tiles: Tensor) -> Tensor:
    with torch.no_grad():
        return model(tiles)


def _shapes(model: Extractor, tiles: Tensor) -> None:
    out = _run(model, tiles)
    want = (tiles.shape[0], model.feature_dim)
    require(isinstance(out, Tensor), f"forward returned {type(out).__name__}, expected a Tensor")
    require(tuple(out.shape) == want, f"features have shape {tuple(out.shape)}, expected {want}")
    require(out.dtype == torch.float32, f"features have dtype {out.dtype}, expected torch.float32 for float32 tiles")
    assert_finite(out, "features")


def _batch_independence(model: Extractor, tiles: Tensor, atol: float, gen: torch.Generator) -> None:
    both = _run(model, tiles)
    alone = _run(model, tiles[:1])
    other = torch.cat([tiles[:1], torch.rand(tiles[1:].shape, generator=gen)])
    replaced = _run(model, other)
    assert_close(alone[0], both[0], "tile 0's features", atol, "between a batch of 2 and a batch of 1")
    assert_close(replaced[0], both[0], "tile 0's features", atol, "when tile 1 was replaced")


def _bf16(model: Extractor, tiles: Tensor) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tiles)
    assert_finite(out, "features", "under torch.autocast('cpu', dtype=torch.bfloat16)")
