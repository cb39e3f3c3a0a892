"""Registers milkit's built-in aggregators."""

from milkit.aggregator import Aggregator
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_aggregators() -> list[type[Aggregator]]:
    from milkit.components.aggregators.abmil import ABMIL
    from milkit.components.aggregators.clam import CLAMMB, CLAMSB
    from milkit.components.aggregators.dtfd import DTFD
    from milkit.components.aggregators.max_pool import MaxPool
    from milkit.components.aggregators.mean_pool import MeanPool
    from milkit.components.aggregators.transmil import TransMIL

    return [MeanPool, MaxPool, ABMIL, TransMIL, CLAMSB, CLAMMB, DTFD]
