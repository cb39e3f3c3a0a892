"""Find the line of a ``[table]`` or ``key`` in a TOML text (tomllib reports no positions)."""

import re

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+(?:\s*\.\s*[A-Za-z0-9_\-\"]+)*)\s*=")


def locate(text: str, table: str, key: str | None = None) -> int | None:
    """1-based line of ``key`` inside ``[table]`` (or of the header when key is None).

    Dotted keys (``a.b``) are matched on their first part; a key not found falls back
    to the table header's line; an absent table gives None.
    """
    current: str | None = None
    header_line: int | None = None
    first = key.split(".")[0] if key else None
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith("[["):
            current = m.group(1).replace('"', "").replace(" ", "")
            if current == table and header_line is None:
                header_line = lineno
                if key is None:
                    return lineno
            continue
        if current == table and first is not None:
            k = _KEY.match(line)
            if k and k.group(1).replace('"', "").split(".")[0].strip() == first:
                return lineno
    return header_line
