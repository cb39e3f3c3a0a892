"""Fixtures for the viewer tests: one trained run with a real slide file and tissue contours, a report run."""

from pathlib import Path

import pytest
from viewhelpers import PS, report_run, train_run, write_slide, write_tissue

pytest.importorskip("starlette", reason="milkit view needs the 'view' extra (pip install 'milkit[view]')")


@pytest.fixture(scope="session")
def view_registries():
    from milkit.plugins import get_plugin_manager
    from milkit.registry import build_registries

    return build_registries(get_plugin_manager(autoload=False))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, view_registries) -> dict:
    """A trained run, the slides folder (one real slide: the first test slide) and that slide's id."""
    from milkit.viz import rundata

    root = tmp_path_factory.mktemp("view")
    run = train_run(root, view_registries)
    test = [r["slide_id"] for r in rundata.load_predictions(run) if r["split"] == "test"]
    slide_id = test[0]
    slides = root / "slides"
    write_slide(slides / f"{slide_id}.tiff")
    write_tissue(root / "cohort" / "features", slide_id, (0, 0, 8 * PS, 3 * PS))
    return {"run": run, "slides": slides, "slide": slide_id, "root": root}


@pytest.fixture(scope="session")
def reports(tmp_path_factory) -> Path:
    return report_run(tmp_path_factory.mktemp("view_reports"))


@pytest.fixture(scope="session")
def viewer(trained, view_registries):
    from milkit.view.viewer import Viewer

    v = Viewer.open([trained["run"]], slide_dirs=[trained["slides"]], registries=view_registries)
    yield v
    v.catalogue.close()


@pytest.fixture(scope="session")
def client(viewer):
    from starlette.testclient import TestClient

    from milkit.view.app import create_app

    with TestClient(create_app(viewer), base_url="http://127.0.0.1:8000") as c:
        yield c
