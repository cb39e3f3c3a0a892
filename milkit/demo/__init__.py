"""A built-in synthetic cohort (slides, subtypes, survival, reports) so milkit runs with no download.

``make_demo_cohort(out_dir)`` writes one; ``demo_cohort()`` returns the cached default one.
See ``docs/demo.md``. The submodules are imported on first use, so loading the demo plugin
(``milkit.demo.plugin``) at CLI start costs nothing.
"""

from typing import Any

__all__ = ["COHORT_COLUMNS", "SUBTYPES", "cache_root", "demo_cohort", "make_demo_cohort"]

_WHERE = {"cache_root": "cache", "demo_cohort": "cache", "COHORT_COLUMNS": "cohort", "make_demo_cohort": "cohort",
          "SUBTYPES": "tissue"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"milkit.demo.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'milkit.demo' has no attribute {name!r}")
