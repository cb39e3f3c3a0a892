"""Registers milkit's built-in heads."""

from milkit.head import Head
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_heads() -> list[type[Head]]:
    from milkit.components.heads.classification import Classification
    from milkit.components.heads.cox import CoxSurvival
    from milkit.components.heads.lm import LMReport
    from milkit.components.heads.multitarget import MultiTargetClassification
    from milkit.components.heads.regression import Regression
    from milkit.components.heads.retrieval import Retrieval

    return [Classification, CoxSurvival, Retrieval, LMReport, Regression, MultiTargetClassification]
