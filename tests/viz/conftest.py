"""Fixtures for the visualisation tests: one really trained run dir, shared by the session."""

from pathlib import Path

import pytest
from vizhelpers import train_run


@pytest.fixture(scope="session")
def session_registries():
    from milkit.plugins import get_plugin_manager
    from milkit.registry import build_registries

    return build_registries(get_plugin_manager(autoload=False))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, session_registries) -> Path:
    """ABMIL + classification, 3 epochs, with plots and report.html written."""
    from milkit.viz import write_run_plots, write_run_report

    run = train_run(tmp_path_factory.mktemp("trained"), session_registries)
    write_run_plots(run, registries=session_registries)
    write_run_report(run, registries=session_registries)
    return run
