"""Registers milkit's built-in extractors (patch encoders)."""

from milkit.extractor import Extractor
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_extractors() -> list[type[Extractor]]:
    return []
