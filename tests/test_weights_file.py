"""milkit/weights_file.py and `milkit convert-weights`: a file is described as what it is, a hostile
pickle is refused by every reader (and never run), and a checkpoint with harmless extras converts."""

import argparse
import gzip
import os
import pickle
import random
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from milkit.cli import make_app
from milkit.state_dict import read_state_dict
from milkit.errors import CheckpointError
from milkit.plugins import get_plugin_manager
from milkit.weights_file import identify, pickle_globals, read_tensors

UNSAFE_ADVICE = ("weights_only=False", "pickle.load", "weights_only` set to `False")


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"layer.weight": torch.randn(4, 3, generator=g), "layer.bias": torch.randn(4, generator=g),
            "bn.num_batches_tracked": torch.tensor(7)}


# --- identify: several inputs per kind ------------------------------------------------------------

def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _torch(path: Path, obj, **kw) -> Path:
    torch.save(obj, path, **kw)
    return path


def _h5(path: Path, fill: bool) -> Path:
    with h5py.File(path, "w") as f:
        if fill:
            f["features"] = np.zeros((3, 4), dtype=np.float32)
    return path


def _st(path: Path, tensors: dict, **kw) -> Path:
    save_file(tensors, str(path), **kw)
    return path


def _npy(path: Path, array) -> Path:
    with open(path, "wb") as f:                  # np.save(name) would append ".npy"
        np.save(f, array)
    return path


def _random(path: Path, seed: int) -> Path:
    rng = random.Random(seed)
    data = bytes([0x07, 0xEE]) + bytes(rng.randrange(256) for _ in range(500))
    return _write(path, data)


MAKERS = {
    "empty": [lambda d: _write(d / "a.pth", b""), lambda d: _write(d / "b.safetensors", b"")],
    "text": [lambda d: _write(d / "a.pth", b"hello world\nsecond line\n"),
             lambda d: _write(d / "b.pt", "\n\n  Gewebe \u2013 20 \u00b5m\n".encode()),
             lambda d: _write(d / "c.bin", b"<!DOCTYPE html>\n<html><body>Sign in</body></html>\n"),
             lambda d: _write(d / "d.pth", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")],
    "torch-zip": [lambda d: _torch(d / "a.pth", _tensors()), lambda d: _torch(d / "b.pt", torch.zeros(3)),
                  lambda d: _torch(d / "c.bin", {"state_dict": _tensors(), "epoch": 3})],
    "torch-legacy": [lambda d: _torch(d / "a.pth", _tensors(), _use_new_zipfile_serialization=False)],
    "pickle": [lambda d: _write(d / "a.pkl", pickle.dumps({"a": 1}, protocol=2)),
               lambda d: _write(d / "b.pth", pickle.dumps([1.5, "x"], protocol=4)),
               lambda d: _write(d / "c.pt", pickle.dumps({"a": (1, 2)}, protocol=5)),
               lambda d: _write(d / "d.pkl", pickle.dumps({"a": [1, 2]}, protocol=0))],
    "safetensors": [lambda d: _st(d / "a.safetensors", _tensors()), lambda d: _st(d / "b.pth", _tensors(1)),
                    lambda d: _st(d / "c.safetensors", {"x": torch.zeros(2)}, metadata={"format": "pt"})],
    "hdf5": [lambda d: _h5(d / "a.h5", True), lambda d: _h5(d / "b.pth", False)],
    "npy": [lambda d: _npy(d / "a.npy", np.arange(6).reshape(2, 3)), lambda d: _npy(d / "b.pth", np.float32(1))],
    "npz": [lambda d: (np.savez(d / "a.npz", x=np.zeros(2), y=np.ones(3)), d / "a.npz")[1]],
    "gzip": [lambda d: _write(d / "a.pth.gz", gzip.compress(b"hello")),
             lambda d: _write(d / "b.pth", gzip.compress(_torch(d / "inner.pth", _tensors()).read_bytes()))],
    "damaged-zip": [lambda d: _write(d / "a.pth", _torch(d / "full.pth", _tensors()).read_bytes()[:700])],
    "binary": [lambda d: _random(d / "a.pth", 0), lambda d: _random(d / "b.safetensors", 1),
               lambda d: _write(d / "c.bin", bytes(range(1, 64)) * 3)],
}
CASES = [(kind, i) for kind, makers in MAKERS.items() for i in range(len(makers))]


@pytest.mark.parametrize(("kind", "index"), CASES, ids=[f"{k}-{i}" for k, i in CASES])
def test_each_kind_is_identified(tmp_path: Path, kind: str, index: int) -> None:
    path = MAKERS[kind][index](tmp_path)
    found = identify(path)
    assert found.kind == kind, found
    assert str(found) == found.detail and found.detail


def test_details_say_what_was_seen(tmp_path: Path) -> None:
    assert identify(MAKERS["text"][0](tmp_path)).detail == "a text file (ASCII), first line: 'hello world'"
    assert "first line: 'Gewebe \u2013 20 \u00b5m'" in identify(MAKERS["text"][1](tmp_path)).detail
    assert "UTF-8" in identify(MAKERS["text"][1](tmp_path)).detail
    assert "HTML page" in identify(MAKERS["text"][2](tmp_path)).detail
    assert "git lfs pull" in identify(MAKERS["text"][3](tmp_path)).detail
    assert "'a/data.pkl'" in identify(MAKERS["torch-zip"][0](tmp_path)).detail
    assert "protocol 4" in identify(MAKERS["pickle"][1](tmp_path)).detail
    assert "3 tensors" in identify(MAKERS["safetensors"][0](tmp_path)).detail
    assert "shape (2, 3)" in identify(MAKERS["npy"][0](tmp_path)).detail
    assert "first bytes: 07 ee" in identify(MAKERS["binary"][0](tmp_path)).detail
    assert identify(tmp_path / "nope.pth").kind == "missing" and identify(tmp_path).kind == "directory"


@pytest.mark.parametrize("kind", ["empty", "text", "hdf5", "npy", "npz", "gzip", "damaged-zip", "binary", "pickle"])
def test_files_that_are_not_weights_are_described_not_loaded(tmp_path: Path, kind: str) -> None:
    path = MAKERS[kind][0](tmp_path)
    with pytest.raises(CheckpointError) as err:
        read_tensors(path)
    msg = str(err.value)
    assert str(path) in msg and identify(path).detail in msg
    assert "Python objects" not in msg and not any(s in msg for s in UNSAFE_ADVICE)


# --- pickle_globals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_pickle_globals_reads_opcodes_only(tmp_path: Path, protocol: int) -> None:
    path = _write(tmp_path / "g.pkl", pickle.dumps(
        [os.getcwd, OrderedDict(a=1), os.getpid, argparse.Namespace(x=1), os.getcwd], protocol=protocol))
    found = pickle_globals(path)
    expected = ["posix.getcwd", "collections.OrderedDict", "posix.getpid", "argparse.Namespace"]
    assert [g for g in found if g in expected] == expected          # memo re-use of 'posix' is tracked


def test_pickle_globals_of_a_torch_archive(tmp_path: Path) -> None:
    path = _torch(tmp_path / "c.pth", {"state_dict": _tensors(), "args": argparse.Namespace(topk=3)})
    found = pickle_globals(path)
    assert "torch._utils._rebuild_tensor_v2" in found and "argparse.Namespace" in found
    assert pickle_globals(MAKERS["safetensors"][0](tmp_path)) == []


# --- a hostile file is refused everywhere, and never run -----------------------------------------

class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


PAYLOADS = {"system": (_System, ("posix.system", "os.system")),
            "exec": (_Exec, ("builtins.exec", "__builtin__.exec"))}


@pytest.fixture(params=[(p, c) for p in PAYLOADS for c in ("raw", "torch")], ids=lambda pc: "-".join(pc))
def hostile(request, tmp_path: Path):
    payload, container = request.param
    cls, names = PAYLOADS[payload]
    marker = tmp_path / "pwned"
    obj = {"state_dict": _tensors(), "epoch": 1, "x": cls(marker)}
    path = tmp_path / "hostile.pth"
    if container == "raw":
        path.write_bytes(pickle.dumps(obj, protocol=4))
    else:
        torch.save(obj, path)
    yield path, marker, names
    assert not marker.exists(), "the payload ran"


def _check_refusal(msg: str, path: Path, names: tuple[str, ...]) -> None:
    assert str(path) in msg
    assert any(n in msg for n in names), msg
    assert "may be hostile" in msg
    assert not any(s in msg for s in UNSAFE_ADVICE), msg


def test_read_tensors_refuses_a_hostile_file(hostile) -> None:
    path, marker, names = hostile
    assert any(n in pickle_globals(path) for n in names)
    with pytest.raises(CheckpointError) as err:
        read_tensors(path)
    _check_refusal(str(err.value), path, names)
    assert "--allow" not in str(err.value)            # never offered for a function that runs code


def test_convert_weights_refuses_a_hostile_file(hostile, tmp_path: Path) -> None:
    path, marker, names = hostile
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(make_app(get_plugin_manager(autoload=False)),
                                ["convert-weights", str(path), "--out", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, CheckpointError)
    _check_refusal(str(result.exception) + result.output, path, names)
    assert not out.exists() and not list(tmp_path.glob(".out.safetensors*"))


def test_allowing_a_dangerous_global_is_refused(hostile, tmp_path: Path) -> None:
    path, marker, names = hostile
    for name in (*names, "subprocess.Popen", "types.FunctionType"):
        with pytest.raises(CheckpointError, match="refusing to allow"):
            read_tensors(path, allow=[name])
    with pytest.raises(CheckpointError, match="not a class"):
        read_tensors(path, allow=["math.sqrt"])


@pytest.mark.histgen
def test_histgen_importer_refuses_a_hostile_file(hostile, tmp_path: Path) -> None:
    from milkit.histgen.importer import import_histgen

    path, marker, names = hostile
    with pytest.raises(CheckpointError) as err:
        import_histgen(path, tmp_path / "ann.json", tmp_path / "run")
    _check_refusal(str(err.value), path, names)


def test_extractor_weight_reader_refuses_a_hostile_file(hostile) -> None:
    path, marker, names = hostile
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    _check_refusal(str(err.value), path, names)


# --- harmless extras: numpy scalars, argparse.Namespace -----------------------------------------

def _upstream_like(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = _tensors(3)
    torch.save({"epoch": 12, "state_dict": sd, "monitor_best": np.float64(0.4213), "best_epoch": np.int64(9),
                "ratio": np.float32(0.5), "args": argparse.Namespace(topk=512, d_model=512, dataset="tcga")}, path)
    return path, sd


def test_checkpoint_with_numpy_scalars_and_namespace_converts(tmp_path: Path) -> None:
    path, sd = _upstream_like(tmp_path / "model_best.pth")
    obj = read_tensors(path)
    assert obj["args"].topk == 512 and float(obj["monitor_best"]) == pytest.approx(0.4213)
    out = tmp_path / "w" / "weights.safetensors"
    result = CliRunner().invoke(make_app(get_plugin_manager(autoload=False)),
                                ["convert-weights", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 3 tensors, 17 parameters" in result.output and "'state_dict'" in result.output
    back = load_file(str(out))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype for k in sd)
    assert [p.name for p in out.parent.iterdir()] == ["weights.safetensors"]   # no temp file left behind
    assert read_state_dict(path).keys() == sd.keys()                           # the extractor reader too


def test_convert_weights_picks_and_flattens(tmp_path: Path) -> None:
    app = make_app(get_plugin_manager(autoload=False))
    inner = {"encoder": {"w": torch.ones(2, 2)}, "head": {"fc": {"b": torch.zeros(3)}}}
    path = _torch(tmp_path / "nested.pth", {"model": inner, "step": 5})
    out = tmp_path / "n.safetensors"
    bad = CliRunner().invoke(app, ["convert-weights", str(path), "--out", str(out)])
    assert isinstance(bad.exception, CheckpointError) and "--key" in str(bad.exception)
    assert "model, step" in str(bad.exception)
    ok = CliRunner().invoke(app, ["convert-weights", str(path), "--out", str(out), "--key", "model"])
    assert ok.exit_code == 0, ok.output
    assert set(load_file(str(out))) == {"encoder.w", "head.fc.b"}
    top = _torch(tmp_path / "top.pth", _tensors())
    ok = CliRunner().invoke(app, ["convert-weights", str(top), "--out", str(out)])
    assert ok.exit_code == 0 and "3 tensors" in ok.output
    same = CliRunner().invoke(app, ["convert-weights", str(out), "--out", str(out)])
    assert isinstance(same.exception, CheckpointError) and "is the input file" in str(same.exception)


def test_shared_and_strided_tensors_are_written(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    path = _torch(tmp_path / "tied.pth", {"a": base, "b": base, "t": base.t(), "row": base[1]})
    out = tmp_path / "tied.safetensors"
    result = CliRunner().invoke(make_app(get_plugin_manager(autoload=False)),
                                ["convert-weights", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    back = load_file(str(out))
    assert torch.equal(back["t"], base.t()) and torch.equal(back["row"], base[1]) and torch.equal(back["b"], base)


def test_a_plain_class_outside_the_allow_list_can_be_allowed(tmp_path: Path) -> None:
    from types import SimpleNamespace

    path = _torch(tmp_path / "ns.pth", {"state_dict": _tensors(), "cfg": SimpleNamespace(lr=0.1)})
    with pytest.raises(CheckpointError) as err:
        read_tensors(path)
    msg = str(err.value)
    assert "types.SimpleNamespace" in msg and "may be hostile" not in msg
    assert f"milkit convert-weights {path} --allow types.SimpleNamespace --out weights.safetensors" in msg
    assert read_tensors(path, allow=["types.SimpleNamespace"])["cfg"].lr == 0.1


def test_numpy_arrays_need_allow_and_the_suggested_command_works(tmp_path: Path) -> None:
    path = _torch(tmp_path / "arr.pth", {"state_dict": _tensors(), "history": np.arange(4.0)})
    with pytest.raises(CheckpointError) as err:
        read_tensors(path)
    command = str(err.value).split("`milkit ", 1)[1].split("`", 1)[0].split()
    assert command[:2] == ["convert-weights", str(path)] and command.count("--allow") == 2
    out = tmp_path / "weights.safetensors"
    command[command.index("--out") + 1] = str(out)
    result = CliRunner().invoke(make_app(get_plugin_manager(autoload=False)), command)
    assert result.exit_code == 0, result.output
    back = load_file(str(out))
    assert all(torch.equal(back[k], v) for k, v in _tensors().items())


def test_legacy_torch_files_read(tmp_path: Path) -> None:
    path = MAKERS["torch-legacy"][0](tmp_path)
    back = read_tensors(path)
    assert all(torch.equal(back[k], v) for k, v in _tensors().items())


# --- a text file passed as a checkpoint -----------------------------------------------------------

def _text_checkpoint(tmp_path: Path) -> Path:
    return _write(tmp_path / "model_best.pth", b"404: Not Found\n")


def _check_text(msg: str, path: Path) -> None:
    assert f"{path} is not a weights file: it is a text file (ASCII), first line: '404: Not Found'" in msg
    assert "pickle" not in msg and "Python objects" not in msg


def test_text_file_as_checkpoint_is_called_text(tmp_path: Path) -> None:
    path = _text_checkpoint(tmp_path)
    for reader in (read_tensors, read_state_dict):
        with pytest.raises(CheckpointError) as err:
            reader(path)
        _check_text(str(err.value), path)
    result = CliRunner().invoke(make_app(get_plugin_manager(autoload=False)),
                                ["convert-weights", str(path), "--out", str(tmp_path / "o.safetensors")])
    _check_text(str(result.exception), path)


@pytest.mark.histgen
def test_text_file_given_to_the_histgen_importer(tmp_path: Path) -> None:
    from milkit.histgen.importer import import_histgen

    path = _text_checkpoint(tmp_path)
    with pytest.raises(CheckpointError) as err:
        import_histgen(path, tmp_path / "ann.json", tmp_path / "run")
    _check_text(str(err.value), path)


def test_no_reader_calls_or_suggests_unsafe_loading() -> None:
    root = Path(__file__).resolve().parents[1] / "milkit"
    for rel in ("weights_file.py", "commands/convert_weights.py", "histgen/convert.py",
                "state_dict.py"):
        source = (root / rel).read_text(encoding="utf-8")
        assert not any(s in source for s in UNSAFE_ADVICE), rel
