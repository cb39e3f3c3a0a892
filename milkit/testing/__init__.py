"""Conformance kit: the checks every milkit component must pass, for milkit's tests and plugin authors.

Each ``check_*`` function builds the component from its config, runs every named check
and raises :class:`CheckFailure` naming each failed check and by how much; the
``run_*_checks`` forms return a :class:`CheckReport` instead (``milkit plugins --check``)::

    from milkit.testing import check_aggregator
    from milkit_dsmil import DSMIL

    def test_contract() -> None:
        check_aggregator(DSMIL)
"""

from milkit.testing.aggregator import AGGREGATOR_CHECKS, check_aggregator, run_aggregator_checks
from milkit.testing.extractor import EXTRACTOR_CHECKS, check_extractor, run_extractor_checks
from milkit.testing.head import HEAD_CHECKS, check_head, run_head_checks
from milkit.testing.report import CheckFailure, CheckReport, CheckResult

__all__ = [
    "AGGREGATOR_CHECKS",
    "EXTRACTOR_CHECKS",
    "HEAD_CHECKS",
    "CheckFailure",
    "CheckReport",
    "CheckResult",
    "check_aggregator",
    "check_extractor",
    "check_head",
    "run_aggregator_checks",
    "run_extractor_checks",
    "run_head_checks",
]
