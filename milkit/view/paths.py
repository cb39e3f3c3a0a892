"""Paths the browser names are confined to the folders the viewer was started on.

A request path is joined to its root only when it is relative, has no ``..`` part, and its resolved
location (symlinks followed) is still inside the resolved root: ``..``, URL-encoded ``..`` (the
server has decoded it by then), absolute paths and symlinks pointing outside are all refused.
"""

from pathlib import Path, PurePosixPath

from milkit.errors import MilkitError


class OutsideRootError(MilkitError):
    """A requested path leaves the folder it must stay in (answered 404, never served)."""


def confined(root: Path | str, relative: str) -> Path:
    """``root / relative`` resolved, if it stays inside ``root``; else :class:`OutsideRootError`.

    Args:
        root: the folder requests may read from.
        relative: the path as the browser sent it (already URL-decoded), ``/``-separated.
    """
    base = Path(root).resolve()
    if "\\" in relative or "\x00" in relative:
        raise OutsideRootError(f"refused path {relative!r}: backslashes and NUL are not allowed")
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise OutsideRootError(f"refused path {relative!r}: only paths inside the folder are served")
    target = (base / Path(*parts)).resolve()
    if target != base and base not in target.parents:
        raise OutsideRootError(f"refused path {relative!r}: it resolves outside {base}")
    return target
