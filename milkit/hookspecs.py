"""Hook specifications for milkit plugins.

A plugin is a module whose functions are marked ``@milkit.hookimpl`` and that is listed
in the ``milkit`` entry-point group of its distribution::

    [project.entry-points.milkit]
    dsmil = "milkit_dsmil"

The ``milkit_register_<kind>s`` hooks return classes (extractors, aggregators, heads, cohort
formats); milkit owns naming, duplicate detection, recipe validation and instantiation.
``milkit_register_commands`` adds commands to the ``milkit`` CLI. milkit's own components,
cohort formats and commands register through these same hooks (``milkit.components.*``,
``milkit.data.csv_format``, ``milkit.commands``, and the bundled ``milkit.histgen`` and
``milkit.demo`` plugins). Every hook is called once per process, in no guaranteed order
between plugins: none may depend on another plugin having run first.
"""

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from milkit.aggregator import Aggregator
    from milkit.cohort_format import CohortFormat
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


@hookspec
def milkit_register_cohort_formats() -> "list[type[CohortFormat]]":
    """Return the cohort formats (layouts a ``[cohort]`` table can name) this plugin provides.

    Called once while the registries are built. Each class subclasses
    :class:`milkit.CohortFormat` and sets a unique ``name`` and a unique ``key``: the
    ``[cohort]`` key that selects the format and holds its file (or ``true``).

    Returns:
        Cohort format classes, e.g. ``[HistGenAnnotations]``; ``[]`` if none.

    Example:
        >>> @milkit.hookimpl
        ... def milkit_register_cohort_formats():
        ...     return [QuPathProject]   # [cohort] qupath = "project.qpproj"
    """


@hookspec
def milkit_register_commands(app: "typer.Typer") -> None:
    """Add this plugin's commands to the ``milkit`` command line.

    Called once when the CLI starts, with milkit's ``typer.Typer`` app; add commands with
    ``@app.command("name")``. Import heavy modules inside the command function, not at the
    top of the plugin, so ``milkit --help`` stays fast. A name already taken by another
    plugin is refused with a warning; a hook that raises is reported and skipped.

    Example:
        >>> @milkit.hookimpl
        ... def milkit_register_commands(app):
        ...     @app.command("dsmil-export")
        ...     def export(run_dir: Path) -> None:
        ...         \"\"\"Export a DSMIL run's instance scores.\"\"\"
    """


__all__ = [
    "PROJECT",
    "hookimpl",
    "hookspec",
    "milkit_register_aggregators",
    "milkit_register_cohort_formats",
    "milkit_register_commands",
    "milkit_register_extractors",
    "milkit_register_heads",
]
