"""The cached default demo: generated once, regenerated when interrupted, one generator at a time."""

import multiprocessing
from pathlib import Path

import pytest

import milkit.demo.cache as cache
from milkit.demo import demo_cohort

TINY = {"n_slides": 3, "seed": 0, "slide_size": 256, "workers": 1}


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Shrink the default demo to 3 tiny slides; every generation appends a line to the returned log."""
    log = tmp_path / "generations.log"
    real = cache.make_demo_cohort

    def counted(out_dir: Path, **kwargs: object) -> Path:
        with open(log, "a") as f:
            f.write("generated\n")
        return real(out_dir, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cache, "DEMO_ARGS", {k: v for k, v in TINY.items() if k != "workers"})
    monkeypatch.setattr(cache, "make_demo_cohort", lambda out_dir, **kw: counted(out_dir, **kw, workers=1))
    return log


def count(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_generated_once_then_reused(generations: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    first = demo_cohort(cache_dir=root, progress=False)
    assert first == root / "demo-v3" / "cohort.csv" and first.is_file()
    assert demo_cohort(cache_dir=root, progress=False) == first
    assert count(generations) == 1


def test_interrupted_cache_is_regenerated(generations: Path, tmp_path: Path) -> None:
    csv_path = demo_cohort(cache_dir=tmp_path, progress=False)
    (csv_path.parent / ".complete").unlink()
    assert demo_cohort(cache_dir=tmp_path, progress=False) == csv_path
    assert count(generations) == 2 and (csv_path.parent / ".complete").exists()


def test_cache_root_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MILKIT_CACHE", str(tmp_path / "elsewhere"))
    assert cache.cache_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("MILKIT_CACHE")
    assert cache.cache_root() == Path.home() / ".cache" / "milkit"


def _call(root: str) -> None:
    demo_cohort(cache_dir=Path(root), progress=False)


def test_concurrent_callers_generate_once(generations: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # children inherit the monkeypatched module
    procs = [ctx.Process(target=_call, args=(str(tmp_path / "shared"),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert count(generations) == 1
