"""What a weights file really is, and its tensors read without running any code it carries.

``identify`` looks at a file's bytes (never its name) and says what it is: empty, text, a
``torch.save`` zip archive, a raw pickle, safetensors, HDF5, numpy, gzip, ... ``pickle_globals``
lists the Python globals (``module.name``) a pickle references by scanning its opcodes with
``pickletools.genops``; nothing is imported or called. ``read_tensors`` reads safetensors, or a
torch file through torch's weights-only unpickler with a short allow-list of harmless globals,
and otherwise raises :class:`~milkit.errors.CheckpointError` saying what the file is, which
globals it needs and how to turn it into safetensors. No path here unpickles arbitrary objects,
and no message tells the user to.
"""

import argparse
import collections
import importlib
import io
import json
import pickletools
import re
import struct
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milkit.errors import CheckpointError

HEAD_BYTES = 4096
"""How much of a file ``identify`` looks at (plus a zip's directory, or a safetensors header)."""
PICKLE_SCAN_LIMIT = 256 << 20
"""At most this many bytes of one pickle inside a zip archive are scanned."""
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The first object of a pre-1.6 (``_use_new_zipfile_serialization=False``) ``torch.save`` file."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
UNRESOLVED = "<a STACK_GLOBAL whose name is computed>"
"""Listed by ``pickle_globals`` when a STACK_GLOBAL's module and name are not plain string pushes."""

SAFE_GLOBAL_NAMES = (
    "collections.OrderedDict",
    "argparse.Namespace",                      # upstream HistGen checkpoints keep their args in one
    "numpy.core.multiarray.scalar",            # numpy scalars, e.g. a metric in 'monitor_best'
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
)
"""Globals every torch file may use beyond torch's own weights-only set (plus numpy's dtype classes)."""

SAFE_RECONSTRUCTORS = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
"""The only functions ``allow`` accepts (anything else there must be a class): numpy array rebuilding."""

UNSAFE_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "_posixsubprocess", "builtins", "__builtin__", "shutil",
    "socket", "importlib", "imp", "runpy", "pickle", "_pickle", "marshal", "ctypes", "code", "codeop",
    "pty", "webbrowser", "multiprocessing", "io", "_io", "pathlib", "tempfile", "types", "functools",
    "operator", "_operator", "copyreg", "copy_reg", "threading", "_thread", "signal", "zipimport",
    "pdb", "bdb", "timeit", "profile", "cProfile", "trace", "asyncio", "concurrent", "urllib", "http",
    "ftplib", "smtplib", "telnetlib", "xmlrpc", "platform", "shlex", "glob", "inspect", "gc", "site",
    "pkgutil", "zipfile", "tarfile", "logging", "pydoc", "doctest", "ast", "compileall", "py_compile",
    "select", "selectors", "mmap", "fcntl", "resource", "commands", "popen2", "nturl2path",
})
"""Top-level modules whose globals can run commands, code or file operations when a pickle calls them."""
PLAIN_CLASSES = frozenset({"types.SimpleNamespace", "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath",
                           "pathlib.PurePath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath"})
"""Data classes ``allow`` accepts although their module is in ``UNSAFE_MODULES``."""
UNSAFE_SUBMODULES = ("torch.hub", "torch.jit", "torch.package", "torch.utils.cpp_extension", "torch.ops",
                     "numpy.lib.npyio", "numpy.testing", "numpy.f2py", "numpy.distutils")

_SAFETENSORS_HINT = ("milkit reads weights from .safetensors files and from torch.save files that hold only "
                     "tensors and plain data")
_REEXPORT = ("load it as you normally do (say into `ck`) and re-export "
             "only its weights with safetensors: `from safetensors.torch import save_file; "
             "save_file(ck['state_dict'], 'weights.safetensors')` (use whichever entry holds the tensors; a "
             "tensors-only `torch.save(ck['state_dict'], 'weights.pth')` also works), then pass that file")


@dataclass(frozen=True)
class FileKind:
    """What a file is: ``kind`` (one word, see ``identify``) and a human-readable ``detail``."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return self.detail


# --- identify --------------------------------------------------------------------------------------

def identify(path: Path | str) -> FileKind:
    """What ``path`` is, from its bytes.

    ``kind`` is one of ``missing``, ``directory``, ``empty``, ``safetensors``, ``torch-zip``,
    ``torchscript``, ``torch-legacy``, ``pickle``, ``npy``, ``npz``, ``zip``, ``damaged-zip``, ``hdf5``, ``gzip``,
    ``bz2``, ``xz``, ``zstd``, ``tar``, ``text`` or ``binary``. ``detail`` is a phrase that
    completes "it is ...", e.g. ``a text file (ASCII), first line: 'hello'``.
    """
    path = Path(path)
    if not path.exists():
        return FileKind("missing", "a path that does not exist")
    if path.is_dir():
        return FileKind("directory", "a folder, not a file")
    size = path.stat().st_size
    if size == 0:
        return FileKind("empty", "an empty file (0 bytes; did the download or copy finish?)")
    with open(path, "rb") as f:
        magic = f.read(HEAD_BYTES)
    if any(magic[off:off + 8] == HDF5_SIGNATURE for off in (0, 512, 1024, 2048)):
        return FileKind("hdf5", f"an HDF5 file ({_size(size)}; e.g. a feature file or Keras weights)")
    if magic.startswith(b"\x93NUMPY"):
        return FileKind("npy", f"a numpy .npy array file ({_npy_header(magic)})")
    if magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _identify_zip(path, size)
    if magic.startswith(b"\x1f\x8b"):
        return FileKind("gzip", f"a gzip-compressed file ({_size(size)})")
    if magic.startswith(b"BZh"):
        return FileKind("bz2", f"a bzip2-compressed file ({_size(size)})")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return FileKind("xz", f"an xz-compressed file ({_size(size)})")
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return FileKind("zstd", f"a zstd-compressed file ({_size(size)})")
    if len(magic) >= 2 and magic[0] == 0x80 and 2 <= magic[1] <= 5:
        if _starts_with_torch_magic(magic):
            return FileKind("torch-legacy", f"a torch.save file in the legacy (pre-1.6) format ({_size(size)})")
        return FileKind("pickle", f"a raw Python pickle (protocol {magic[1]}, {_size(size)}), not a torch.save "
                                  "zip archive")
    safetensors = _safetensors_header(path, magic, size)
    if safetensors is not None:
        n = len([k for k in safetensors if k != "__metadata__"])
        return FileKind("safetensors", f"a safetensors file ({n} tensors, {_size(size)})")
    if len(magic) > 262 and magic[257:262] == b"ustar":
        return FileKind("tar", f"a tar archive ({_size(size)})")
    text = _as_text(magic)
    if text is not None:
        if _is_text_pickle(magic):
            return FileKind("pickle", f"a raw Python pickle (text protocol 0, {_size(size)})")
        return FileKind("text", _text_detail(text, ascii_only=all(b < 0x80 for b in magic)))
    return FileKind("binary", f"an unrecognised binary file ({_size(size)}), first bytes: {magic[:16].hex(' ')}")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _npy_header(magic: bytes) -> str:
    match = re.search(rb"'descr':\s*'([^']*)'.*'shape':\s*(\([^)]*\))", magic[:512], re.S)
    return f"dtype {match.group(1).decode()}, shape {match.group(2).decode()}" if match else "header unreadable"


def _identify_zip(path: Path, size: int) -> FileKind:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return FileKind("damaged-zip", f"a damaged or truncated zip archive ({_size(size)}: {exc}; torch.save "
                                       "writes zip archives, so possibly a checkpoint cut short)")
    pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n or n.startswith("code/") for n in names):
        return FileKind("torchscript", f"a TorchScript archive (torch.jit.save: code and weights, {_size(size)})")
    if pkl:
        return FileKind("torch-zip", f"a torch.save zip archive ('{pkl[0]}', {len(names)} members, {_size(size)})")
    if names and all(n.endswith(".npy") for n in names):
        return FileKind("npz", f"a numpy .npz archive ({len(names)} arrays: {_listing(names)})")
    return FileKind("zip", f"a zip archive that is not a torch.save file ({len(names)} members: {_listing(names)})")


def _listing(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _starts_with_torch_magic(magic: bytes) -> bool:
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(magic[:64])):
            if op.name == "STOP":
                return False
            if arg == TORCH_LEGACY_MAGIC:
                return True
    except Exception:  # not a well-formed pickle: just not the legacy magic
        return False
    return False


def _safetensors_header(path: Path, magic: bytes, size: int) -> dict | None:
    if size < 10:
        return None
    (n,) = struct.unpack("<Q", magic[:8])
    if not 2 <= n <= min(size - 8, 100 << 20):
        return None
    if magic[8:9] != b"{":
        return None
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def _as_text(magic: bytes) -> str | None:
    if b"\x00" in magic:
        return None
    try:
        text = magic.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(magic) - 3 or exc.reason != "unexpected end of data":
            return None
        text = magic[:exc.start].decode("utf-8")
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f\v\x1b")
    return None if controls > max(2, len(text) // 100) else text.removeprefix("\ufeff")


def _is_text_pickle(magic: bytes) -> bool:
    """A protocol-0 pickle (text opcodes) that parses to its STOP."""
    if magic[:1] not in (b"(", b"c", b"]", b"}", b"S", b"V", b"I", b"L", b"F", b"N", b"i"):
        return False
    try:
        ops = [op.name for op, _, _ in pickletools.genops(io.BytesIO(magic))]
    except Exception:  # ordinary text is not a pickle
        return False
    return len(ops) > 1 and ops[-1] == "STOP"


def _text_detail(text: str, *, ascii_only: bool) -> str:
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    shown = first if len(first) <= 100 else first[:100] + "..."
    what = f"a text file ({'ASCII' if ascii_only else 'UTF-8'}), first line: {shown!r}"
    low = text.lstrip().lower()
    if first.startswith("version https://git-lfs"):
        return what + " (a Git LFS pointer, not the file itself: run `git lfs pull` in its repository)"
    if low.startswith(("<!doctype html", "<html")) or "<html" in low[:500]:
        return what + " (an HTML page: the download saved a web page, e.g. a login or error page, not the file)"
    if low.startswith(("{", "[")):
        return what + " (JSON?)"
    return what


# --- pickle_globals ----------------------------------------------------------------------------------

_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MARK = object()
_OTHER = object()


def pickle_globals(path: Path | str) -> list[str]:
    """Every global (``module.name``) the pickle(s) in ``path`` reference, in order of first use.

    Works on raw pickles (and the legacy torch format, a few pickles in a row) and on
    ``torch.save`` zip archives (every ``*.pkl`` member). Only opcodes are read
    (``pickletools.genops``): GLOBAL and INST carry the name, STACK_GLOBAL takes the two
    strings pushed before it (tracked through the memo). Other files give ``[]``.
    """
    path = Path(path)
    kind = identify(path).kind
    found: dict[str, None] = {}
    if kind in ("torch-zip", "torchscript", "zip"):
        with zipfile.ZipFile(path) as z:
            members = sorted((n for n in z.namelist() if n.endswith(".pkl")), key=lambda n: not n.endswith("data.pkl"))
            for name in members:
                with z.open(name) as member:
                    _scan(io.BytesIO(member.read(PICKLE_SCAN_LIMIT)), found)
    elif kind in ("pickle", "torch-legacy"):
        with open(path, "rb") as f:
            for _ in range(5 if kind == "torch-legacy" else 1):  # legacy: magic, version, sys info, object, keys
                if not _scan(f, found):
                    break
    return list(found)


def _scan(stream: Any, found: dict[str, None]) -> bool:
    """Add the globals of one pickle in ``stream`` to ``found``; False if it ended badly (or at EOF)."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}

    def pop() -> Any:
        return stack.pop() if stack else _OTHER

    try:
        for op, arg, _ in pickletools.genops(stream):
            name = op.name
            if name in _STRING_OPS:
                stack.append(arg)
            elif name in _GET_OPS:
                stack.append(memo.get(arg, _OTHER))
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _OTHER
            elif name in _PUT_OPS:
                memo[arg] = stack[-1] if stack else _OTHER
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found[f"{module}.{attr}"] = None
                if name == "INST":
                    _pop_to_mark(stack)
                stack.append(_OTHER)
            elif name == "STACK_GLOBAL":
                attr, module = pop(), pop()
                ok = isinstance(module, str) and isinstance(attr, str)
                found[f"{module}.{attr}" if ok else UNRESOLVED] = None
                stack.append(_OTHER)
            elif name == "DUP":
                stack.append(stack[-1] if stack else _OTHER)
            elif name == "STOP":
                return True
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    _pop_to_mark(stack)
                    for _ in range(before.index(pickletools.markobject)):
                        pop()
                else:
                    for _ in before:
                        pop()
                stack += [_MARK if item is pickletools.markobject else _OTHER for item in op.stack_after]
    except Exception:  # malformed or truncated: keep what was found so far
        return False
    return False


def _pop_to_mark(stack: list[Any]) -> None:
    while stack and stack.pop() is not _MARK:
        pass


# --- read_tensors ---------------------------------------------------------------------------------

def _import(name: str) -> Any:
    """The object called ``name`` (``module.sub.Name``), or None when it cannot be imported."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def is_unsafe(name: str) -> bool:
    """Whether global ``name`` comes from a module whose functions can run commands or code."""
    if name in PLAIN_CLASSES:
        return False
    module = name.rpartition(".")[0]
    return module.split(".")[0] in UNSAFE_MODULES or any(
        module == m or module.startswith(m + ".") for m in UNSAFE_SUBMODULES)


def _fixed_safe_globals() -> list[Any]:
    """``SAFE_GLOBAL_NAMES`` as objects (``(object, name)`` where the name is an alias), numpy's dtypes."""
    out: list[Any] = [collections.OrderedDict, argparse.Namespace]
    try:
        import numpy as np
    except ImportError:  # no numpy, no numpy scalars to rebuild
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    out += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    classes = {v for v in vars(dtypes).values() if isinstance(v, type) and issubclass(v, np.dtype)} if dtypes else set()
    classes |= {type(np.dtype(t)) for t in "?bhilqBHILQefdgFDGSUVOMm"}
    return out + sorted(classes - {np.dtype}, key=lambda c: c.__qualname__)


def _resolve_allowed(allow: Iterable[str]) -> list[Any]:
    """``allow`` names -> ``(object, name)`` for torch; refuses unsafe modules, unknown names and functions."""
    out = []
    for name in allow:
        name = name.strip()
        if "." not in name:
            raise CheckpointError(f"--allow {name!r}: give the full name as the pickle writes it, module.Name "
                                  "(e.g. argparse.Namespace)")
        if is_unsafe(name):
            raise CheckpointError(f"refusing to allow {name}: globals of that module can run commands or code "
                                  "when a file calls them; re-export the weights on a trusted machine instead")
        obj = _import(name)
        if obj is None:
            raise CheckpointError(f"--allow {name}: no such importable class here (install the package that "
                                  "defines it, or re-export the weights with safetensors)")
        if not isinstance(obj, type) and name not in SAFE_RECONSTRUCTORS:
            raise CheckpointError(f"--allow {name}: it is a {type(obj).__name__}, not a class; a function named in "
                                  "a pickle is called with arguments the file chooses, so only classes (and numpy's "
                                  f"{SAFE_RECONSTRUCTORS[1]}) can be allowed")
        defined = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        if name not in PLAIN_CLASSES and is_unsafe(defined):
            raise CheckpointError(f"refusing to allow {name}: it is defined in {obj.__module__}, whose globals can "
                                  "run commands or code")
        out.append((obj, name))
    return out


def _torch_allowed_names() -> set[str]:
    """Globals torch's weights-only unpickler accepts by itself (empty if torch hides them)."""
    try:
        from torch import _weights_only_unpickler as wou

        return set(wou._get_allowed_globals())
    except Exception:  # a torch without that private helper: report every non-torch global
        return set()


def _name(entry: Any) -> str:
    return entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"


def disallowed_globals(globals_: Iterable[str], allow: Iterable[str] = ()) -> list[str]:
    """Those of ``globals_`` that neither torch's weights-only set nor milkit's allow-list (+ ``allow``) cover."""
    allowed = _torch_allowed_names() | set(SAFE_GLOBAL_NAMES) | set(allow)
    allowed |= {_name(g) for g in _fixed_safe_globals()}
    torch_known = bool(_torch_allowed_names())
    return [g for g in globals_ if g not in allowed and (torch_known or not g.startswith("torch."))]


def read_tensors(path: Path | str, *, allow: Iterable[str] = ()) -> dict:
    """The contents of a safetensors file, or of a ``torch.save`` file read with
    ``torch.load(map_location="cpu", weights_only=True)`` inside ``torch.serialization.safe_globals``
    of milkit's allow-list (numpy scalars and dtypes, ``collections.OrderedDict``,
    ``argparse.Namespace``) plus ``allow`` (``module.Name`` classes you trust).

    Raises:
        CheckpointError: the file is missing, not a weights file, or needs globals outside the
            allow-list; the message names the file, says what it is, lists those globals and how
            to convert the file safely.
    """
    path = Path(path)
    allow = list(allow)
    extra = _resolve_allowed(allow)
    kind = identify(path)
    if kind.kind == "missing":
        raise CheckpointError(f"weights file not found: {path}")
    if kind.kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # a damaged file: say so, with safetensors' reason
            raise CheckpointError(f"{path} is {kind.detail}, but safetensors cannot read it: {exc}") from None
    if kind.kind not in ("torch-zip", "torch-legacy"):
        raise CheckpointError(not_weights_message(path, kind))
    import torch

    try:
        with torch.serialization.safe_globals([*_fixed_safe_globals(), *extra]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, ...: explained from the file itself
        raise CheckpointError(refusal_message(path, kind, exc, allow)) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (a dict of tensors), found {type(obj).__name__}")
    return dict(obj)


def not_weights_message(path: Path, kind: FileKind | None = None) -> str:
    """Why ``path`` (which is not safetensors nor a torch.save file) cannot be read, and what to do."""
    kind = kind or identify(path)
    what = f"{path} is not a weights file: it is {kind.detail}."
    todo = {
        "directory": "Give the weights file inside it.",
        "empty": "Fetch or copy the file again.",
        "text": f"{_SAFETENSORS_HINT}; pass that file (is the path mixed up, or did a download go wrong?).",
        "pickle": "",
        "torchscript": ("It holds code as well as weights, so milkit does not load it; on a machine where it is "
                        "trusted, load the model there and save `model.state_dict()` with "
                        "safetensors.torch.save_file, then pass that file."),
        "npy": f"It holds one array, not named weights; {_SAFETENSORS_HINT}.",
        "npz": f"It holds numpy arrays, not a model's weights; {_SAFETENSORS_HINT}.",
        "zip": "Unzip it and pass the weights file inside.",
        "damaged-zip": "Fetch or copy the file again (compare its size or checksum with the original).",
        "tar": "Unpack it (`tar xf`) and pass the weights file inside.",
        "gzip": "Decompress it first (`gunzip -k FILE`) and pass the result.",
        "bz2": "Decompress it first (`bunzip2 -k FILE`) and pass the result.",
        "xz": "Decompress it first (`unxz -k FILE`) and pass the result.",
        "zstd": "Decompress it first (`zstd -d FILE`) and pass the result.",
        "hdf5": f"{_SAFETENSORS_HINT}; export the weights to safetensors.",
    }.get(kind.kind, f"{_SAFETENSORS_HINT}.")
    if kind.kind == "pickle":
        found = pickle_globals(path)
        lines = [what, "It was written by pickle, not torch.save, and milkit never unpickles such a file "
                       "(nothing in it was run)."]
        if found:
            lines.append(_globals_sentence(found))
        lines.append(_what_to_do(found))
        return "\n".join(lines)
    return f"{what} {todo}".rstrip()


def refusal_message(path: Path, kind: FileKind, exc: BaseException, allow: Iterable[str] = ()) -> str:
    """Why torch's weights-only unpickler refused ``path``: what it is, which globals it needs, what to do."""
    found = pickle_globals(path)
    outside = disallowed_globals(found, allow)
    lines = [f"{path} cannot be read with torch.load(weights_only=True), and milkit unpickles nothing else "
             f"(nothing in the file was run). It is {kind.detail}."]
    if outside:
        lines.append(_globals_sentence(outside))
    else:
        lines.append(f"Reason: {_reason(exc)}.")
    lines.append(_what_to_do(outside))
    plain = [g for g in outside if not is_unsafe(g) and g != UNRESOLVED]
    if outside and len(plain) == len(outside):
        flags = " ".join(f"--allow {name}" for name in plain)
        them = "it" if len(plain) == 1 else "each of them"
        lines.append(f"None of these is known to run code; if you trust {them} as plain data, the file can be "
                     f"converted here instead: `milkit convert-weights {path} {flags} --out weights.safetensors`.")
    elif not outside:
        lines.append("If the file is damaged or truncated (an interrupted download or copy), fetch it again.")
    return "\n".join(lines)


def _globals_sentence(found: list[str]) -> str:
    text = (f"Its pickle references Python globals outside milkit's allow-list (tensors, numpy scalars, "
            f"OrderedDict, argparse.Namespace): {', '.join(found)}.")
    unsafe = [g for g in found if is_unsafe(g) or g == UNRESOLVED]
    if unsafe:
        text += (f" {', '.join(unsafe)} can run commands or code when the file is loaded: the file may be "
                 "hostile. Do not load it with torch.load or pickle anywhere unless you know who made it and why.")
    return text


def _what_to_do(found: list[str]) -> str:
    if any(is_unsafe(g) or g == UNRESOLVED for g in found):
        return ("What to do: get the weights as safetensors from their source. Only if you know who made the file "
                f"and trust it: on a machine where it is trusted, {_REEXPORT}.")
    return f"What to do: on a machine where the file is trusted, {_REEXPORT}."


def _reason(exc: BaseException) -> str:
    """A short, safe-to-show reason from torch's exception (never its advice to load unsafely)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = first.split(". Please use", 1)[0].split(" If you trust", 1)[0]
    if re.search(r"weights_only\W*(set to\W*)?False", first, re.I) or "trust the source" in first:
        first = f"{type(exc).__name__} from torch's weights-only unpickler"
    return first[:300].rstrip(". ")
