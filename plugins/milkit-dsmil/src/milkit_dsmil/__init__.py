"""milkit plugin: the example DSMIL-style aggregator ``dsmil_example`` (after Li et al., CVPR 2021)."""

from milkit import Aggregator, hookimpl
from milkit_dsmil.dsmil import DSMIL, DSMILConfig

__all__ = ["DSMIL", "DSMILConfig", "milkit_register_aggregators"]


@hookimpl
def milkit_register_aggregators() -> list[type[Aggregator]]:
    return [DSMIL]
