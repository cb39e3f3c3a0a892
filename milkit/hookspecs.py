"""Hook specifications for milkit plugins.

A plugin is a module whose functions are marked ``@milkit.hookimpl`` and that is listed
in the ``milkit`` entry-point group of its distribution::

    [project.entry-points.milkit]
    dsmil = "milkit_dsmil"

Each ``milkit_register_*`` hook returns component classes. milkit owns naming,
duplicate detection, recipe validation and instantiation. milkit's own components
register through these same hooks (``milkit.builtin``).
"""

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from milkit.aggregator import Aggregator
    from milkit.extractor import Extractor
    from milkit.head import Head

PROJECT = "milkit"  # marker name == entry-point group
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def milkit_register_extractors() -> "list[type[Extractor]]":
    """Return the extractor (patch encoder) classes this plugin provides.

    Called once while the registries are built, before any recipe is read. Each class
    subclasses :class:`milkit.Extractor` and sets a unique ``name`` and a ``Config``.

    Returns:
        Extractor classes, e.g. ``[UNI]``; ``[]`` if none.

    Example:
        >>> @milkit.hookimpl
        ... def milkit_register_extractors():
        ...     return [UNI]
    """


@hookspec
def milkit_register_aggregators() -> "list[type[Aggregator]]":
    """Return the aggregator classes this plugin provides.

    Called once while the registries are built, before any recipe is read. Each class
    subclasses :class:`milkit.Aggregator` and sets a unique ``name`` (lowercase
    snake_case) and a ``Config`` model.

    Returns:
        Aggregator classes, e.g. ``[DSMIL]``; ``[]`` if none.

    Example:
        >>> @milkit.hookimpl
        ... def milkit_register_aggregators():
        ...     return [DSMIL]
    """


@hookspec
def milkit_register_heads() -> "list[type[Head]]":
    """Return the head (task) classes this plugin provides.

    Called once while the registries are built. Each class subclasses
    :class:`milkit.Head` and sets a unique ``name`` and a ``Config``.

    Returns:
        Head classes, e.g. ``[OrdinalGrading]``; ``[]`` if none.

    Example:
        >>> @milkit.hookimpl
        ... def milkit_register_heads():
        ...     return [OrdinalGrading]
    """


__all__ = [
    "PROJECT",
    "hookimpl",
    "hookspec",
    "milkit_register_aggregators",
    "milkit_register_extractors",
    "milkit_register_heads",
]
