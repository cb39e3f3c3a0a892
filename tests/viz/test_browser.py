"""report.html as a person sees it: rendered by headless Chromium, every image loads, numbers show.

Needs Debian's ``chromium`` + ``chromium-driver`` and ``selenium`` (pip); skipped otherwise.
"""

import json
import shutil

import pytest

pytestmark = pytest.mark.slow


def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("headless Chromium not available (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    from selenium.common.exceptions import WebDriverException

    try:
        return webdriver.Chrome(service=Service(driver), options=options)
    except WebDriverException as exc:  # a broken install should not fail the suite
        pytest.skip(f"Chromium could not start: {exc}")


@pytest.fixture(scope="module")
def browser():
    b = _chromium()
    yield b
    b.quit()


def test_run_report_renders_with_every_image_loaded(browser, trained_run):
    browser.get((trained_run / "report.html").as_uri())
    widths = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")
    assert len(widths) == 6 and all(w > 100 for w in widths), widths
    text = browser.find_element("tag name", "body").text
    metrics = json.loads((trained_run / "metrics.json").read_text())
    value = metrics["folds"][0]["metrics"]["test"]["balanced_accuracy"]
    assert f"{value:.4g}" in text and "balanced_accuracy" in text
    for heading in ("Metrics", "Plots", "Attention heatmaps", "Data", "Cost", "Recipe (resolved)"):
        assert heading in text
    assert "viz <test> & run" in browser.title                              # escaped in HTML, shown as text
