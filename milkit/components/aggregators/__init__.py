"""Registers milkit's built-in aggregators."""

from milkit.aggregator import Aggregator
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_aggregators() -> list[type[Aggregator]]:
    from milkit.components.aggregators.abmil import ABMIL
    from milkit.components.aggregators.chief import CHIEF
    from milkit.components.aggregators.clam import CLAMMB, CLAMSB
    from milkit.components.aggregators.dsmil import DSMIL
    from milkit.components.aggregators.dtfd import DTFD
    from milkit.components.aggregators.feather import FEATHER
    from milkit.components.aggregators.gigapath_slide import GigaPathSlide
    from milkit.components.aggregators.ilra import ILRA
    from milkit.components.aggregators.madeleine import MADELEINE
    from milkit.components.aggregators.mamba_mil import MambaMIL
    from milkit.components.aggregators.max_pool import MaxPool
    from milkit.components.aggregators.mean_pool import MeanPool
    from milkit.components.aggregators.perceiver import Perceiver
    from milkit.components.aggregators.prism import PRISM
    from milkit.components.aggregators.rrt import RRT
    from milkit.components.aggregators.titan import TITAN
    from milkit.components.aggregators.transmil import TransMIL
    from milkit.components.aggregators.wikg import WiKG

    return [MeanPool, MaxPool, ABMIL, TransMIL, CLAMSB, CLAMMB, DTFD, DSMIL, ILRA, WiKG, Perceiver, RRT, MambaMIL,
            CHIEF, MADELEINE, FEATHER, PRISM, TITAN, GigaPathSlide]
