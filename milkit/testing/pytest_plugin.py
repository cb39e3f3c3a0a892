"""pytest plugin for milkit plugin authors: the conformance kit as fixtures.

Registered through milkit's ``pytest11`` entry point, so the fixtures exist in every pytest
session once milkit is installed; with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` enable it with
``-p milkit.testing.pytest_plugin``::

    def test_contract(milkit_check_aggregator):
        milkit_check_aggregator(DSMIL, {"embed_dim": 32})

Imports are deferred to the fixtures, so sessions that do not use them never import torch.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from milkit.registry import Registries
    from milkit.testing.report import CheckReport


@pytest.fixture
def milkit_check_aggregator() -> "Callable[..., CheckReport]":
    """:func:`milkit.testing.check_aggregator`: raises ``CheckFailure`` naming each failed check."""
    from milkit.testing import check_aggregator

    return check_aggregator


@pytest.fixture
def milkit_check_head() -> "Callable[..., CheckReport]":
    """:func:`milkit.testing.check_head`: raises ``CheckFailure`` naming each failed check."""
    from milkit.testing import check_head

    return check_head


@pytest.fixture
def milkit_check_extractor() -> "Callable[..., CheckReport]":
    """:func:`milkit.testing.check_extractor`: raises ``CheckFailure`` naming each failed check."""
    from milkit.testing import check_extractor

    return check_extractor


@pytest.fixture
def milkit_registries() -> "Registries":
    """Registries from a fresh plugin manager, entry-point plugins included (is my plugin found?)."""
    from milkit.plugins import get_plugin_manager
    from milkit.registry import build_registries

    return build_registries(get_plugin_manager())
