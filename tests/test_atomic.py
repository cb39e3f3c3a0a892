"""Every file milkit writes honours the umask (no 0600 files from temp-file writes) and appears atomically."""

import os
import stat

import numpy as np
import pytest

from milkit.atomic import atomic_path, file_mode, write_text


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_mode_follows_the_umask(tmp_path, umask_027):
    assert file_mode() == 0o640
    write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == 0o640


def test_a_failed_write_leaves_neither_the_target_nor_a_temp_file(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "keep.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "keep.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_feature_files_checkpoints_and_reports_get_the_umask_mode(tmp_path, umask_027):
    from torch import nn

    from milkit.checkpoint import save_json, save_weights
    from milkit.data.feature_formats import write_bag
    from milkit.extract.report import SlideOutcome, write_report

    write_bag(tmp_path / "s.h5", np.ones((3, 4), "float32"), np.zeros((3, 2)), {"extractor": "x"})
    save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    save_json(tmp_path / "m.json", {"a": 1})
    write_report(tmp_path / "extraction_report.csv", [SlideOutcome("s", "s.svs", "done")])
    for name in ("s.h5", "w.safetensors", "m.json", "extraction_report.csv"):
        assert _mode(tmp_path / name) == 0o640, name
