"""PlotSink: where a run's plots go (``RUN/plots/``) and the index report.html reads them from.

Each plot is drawn through :meth:`PlotSink.attempt`: a failure is logged and kept as a note
(shown in report.html), never raised, so a plotting bug cannot crash a finished run.
"""

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("milkit")
INDEX = "index.json"


class PlotSink:
    """What was written to ``dir`` (files with title and caption) and what failed (notes)."""

    def __init__(self, plots_dir: Path) -> None:
        self.dir = Path(plots_dir)
        self.items: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def attempt(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None with a note ``"<what>: not drawn (...)"`` when it raises."""
        try:
            return fn()
        except Exception as exc:  # plotting must never crash a run
            log.warning("plot '%s' failed: %s: %s", what, type(exc).__name__, exc, exc_info=True)
            self.notes.append(f"{what}: not drawn ({type(exc).__name__}: {exc})")
            return None

    def note(self, text: str) -> None:
        """A line shown under the plots (why something was not drawn, caveats)."""
        self.notes.append(text)

    def add(self, path: Path, title: str, caption: str = "", section: str = "plots") -> None:
        """Register a PNG written under ``dir`` (``section``: "plots" or "heatmaps")."""
        self._item(path, title, caption, "image", section)

    def add_table(self, name: str, title: str, caption: str, header: Sequence[str],
                  rows: Sequence[Sequence[Any]]) -> Path:
        """Write a table (``<name>.json``: header and rows of cells) that report.html renders."""
        path = self.dir / f"{name}.json"
        path.write_text(json.dumps({"header": list(header), "rows": [list(r) for r in rows]}, indent=1))
        self._item(path, title, caption, "table", "plots")
        return path

    def _item(self, path: Path, title: str, caption: str, kind: str, section: str) -> None:
        self.items.append({"file": Path(path).relative_to(self.dir).as_posix(), "title": title, "caption": caption,
                           "kind": kind, "section": section})

    def write(self) -> Path:
        """Write ``index.json`` and return its path."""
        path = self.dir / INDEX
        path.write_text(json.dumps({"items": self.items, "notes": self.notes}, indent=1))
        return path
