"""The demo as a plugin: the ``demo = true`` cohort format (with its default extractor) and ``milkit demo``."""

import typer

from milkit.cohort_format import CohortFormat
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_cohort_formats() -> list[type[CohortFormat]]:
    from milkit.demo.cohort_format import DemoCohort

    return [DemoCohort]


@hookimpl
def milkit_register_commands(app: typer.Typer) -> None:
    from milkit.demo.command import register

    register(app)
