"""Registers milkit's built-in heads."""

from milkit.head import Head
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_heads() -> list[type[Head]]:
    from milkit.builtin.classification import Classification
    from milkit.builtin.cox import CoxSurvival

    return [Classification, CoxSurvival]
