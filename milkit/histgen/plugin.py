"""Registers HistGen's components: the ``histgen`` aggregator and the ``report`` head."""

from milkit.aggregator import Aggregator
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
