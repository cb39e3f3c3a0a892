"""The cohort-format interface: a ``[cohort]`` key that names a cohort layout, and its reader.

A format turns what a recipe names (a CSV table, HistGen's annotation JSON, the built-in
demo) into a :class:`milkit.data.cohort.Cohort`. It is registered through the
``milkit_register_cohort_formats`` hook; the recipe picks it by its ``key``::

    [cohort]
    annotations = "annotation.json"   # -> the format whose key is "annotations"
"""

from pathlib import Path
from typing import ClassVar, Literal

from milkit.config import ComponentConfig
from milkit.data.cohort import Cohort


class CohortFormat:
    """A cohort layout. Subclasses set the class attributes and implement :meth:`load`."""

    name: ClassVar[str]
    """Registry name, e.g. ``histgen-annotations``."""
    key: ClassVar[str]
    """The ``[cohort]`` key that selects the format and holds its value, e.g. ``annotations``."""
    value: ClassVar[Literal["file", "flag"]] = "file"
    """``file``: the key's value is a path, resolved against the recipe's folder and checked to
    exist; ``flag``: the key is ``true`` (the built-in demo)."""
    description: ClassVar[str] = ""
    """One line for ``milkit plugins`` and error messages."""
    default_extractor: ClassVar[str | None] = None
    """Extractor used when the recipe has no ``[extractor]`` table (None: features must exist)."""
    has_splits: ClassVar[bool] = False
    """The layout carries its own train/val/test split (used by ``splits = "holdout"``/``"given"``)."""
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    """No options today; present so every registered class has a validated ``Config``."""

    def load(self, value: Path | bool, *, slides_dir: Path | None = None) -> Cohort:
        """Read the cohort named by ``value`` (a resolved path, or ``True`` for a flag)."""
        raise NotImplementedError

    def columns(self, value: Path | bool) -> list[str] | None:
        """The columns its rows will have, read cheaply for recipe validation (None: unknown)."""
        return None
