"""HistGen as a plugin: its aggregator, report head, annotation format and ``import-histgen`` command.

Registered only through milkit's hooks, like any third-party plugin; block it with
``MILKIT_DISABLE_PLUGINS=milkit.histgen`` and nothing of HistGen is visible.
"""

import typer

from milkit.aggregator import Aggregator
from milkit.cohort_format import CohortFormat
from milkit.head import Head
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_aggregators() -> list[type[Aggregator]]:
    from milkit.histgen.aggregator import HistGen

    return [HistGen]


@hookimpl
def milkit_register_heads() -> list[type[Head]]:
    from milkit.histgen.report_head import Report

    return [Report]


@hookimpl
def milkit_register_cohort_formats() -> list[type[CohortFormat]]:
    from milkit.histgen.annotations import HistGenAnnotations

    return [HistGenAnnotations]


@hookimpl
def milkit_register_commands(app: typer.Typer) -> None:
    from milkit.histgen.command import register

    register(app)
