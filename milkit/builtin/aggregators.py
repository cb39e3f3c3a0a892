"""Registers milkit's built-in aggregators."""

from milkit.aggregator import Aggregator
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_aggregators() -> list[type[Aggregator]]:
    from milkit.builtin.abmil import ABMIL
    from milkit.builtin.max_pool import MaxPool
    from milkit.builtin.mean_pool import MeanPool
    from milkit.builtin.transmil import TransMIL

    return [MeanPool, MaxPool, ABMIL, TransMIL]
