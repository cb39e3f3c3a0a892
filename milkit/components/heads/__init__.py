"""Registers milkit's built-in heads."""

from milkit.head import Head
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_heads() -> list[type[Head]]:
    from milkit.components.heads.classification import Classification
    from milkit.components.heads.cox import CoxSurvival

    return [Classification, CoxSurvival]
