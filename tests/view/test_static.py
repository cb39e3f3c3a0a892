"""The pages' assets (milkit/view/static/): present, shipped as package data, OpenSeadragon vendored with its licence."""

import re
import tomllib
from pathlib import Path

import milkit.view.app as app

STATIC = Path(app.__file__).parent / "static"


def test_every_asset_a_page_names_exists():
    for page in ("cohort.html", "slide.html"):
        refs = re.findall(r'(?:src|href)="/static/([^"]+)"', (STATIC / page).read_text())
        assert refs, page
        for ref in refs:
            assert (STATIC / ref).is_file(), (page, ref)
    js = (STATIC / "slide.js").read_text()
    prefix = re.search(r'prefixUrl: "/static/([^"]+)"', js).group(1)
    assert (STATIC / prefix / "home_rest.png").is_file()


def test_openseadragon_is_vendored_with_its_licence():
    osd = STATIC / "openseadragon"
    assert (osd / "openseadragon.min.js").read_text()[:60].startswith("//! openseadragon 4.1.1")
    assert "Redistribution and use in source and binary forms" in (osd / "LICENSE.txt").read_text()
    assert len(list((osd / "images").glob("*.png"))) >= 40


def test_static_files_are_package_data():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["milkit"]
    assert "view/static/**/*" in patterns
    assert pyproject["project"]["optional-dependencies"]["view"]
    assert set(pyproject["project"]["optional-dependencies"]["view"]) <= set(pyproject["project"]["optional-dependencies"]["all"])
