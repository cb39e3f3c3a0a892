"""``milkit view`` as a person uses it, in headless Chromium: cohort page, a slide, the heatmap toggled,
a top-k patch clicked (the viewport goes there), two runs side by side, a report run's reports, and
report.html's links to a running viewer. Screenshots go to the test's tmp dir and, when
``MILKIT_TEST_ARTIFACTS`` is set, are copied there.

Needs Debian's ``chromium`` + ``chromium-driver`` and ``selenium``; skipped otherwise.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("headless Chromium not available (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(driver), options=options)
    except WebDriverException as exc:  # a broken install should not fail the suite
        pytest.skip(f"Chromium could not start: {exc}")


class Server:
    """``create_app(viewer)`` served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, viewer) -> None:
        import uvicorn

        from milkit.view.app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(viewer), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def browser():
    b = _chromium()
    b.set_script_timeout(30)
    yield b
    b.quit()


@pytest.fixture(scope="module")
def server(viewer):
    s = Server(viewer)
    yield s
    s.stop()


@pytest.fixture
def shot(browser, tmp_path):
    """Save a screenshot as <name>.png in the test's tmp dir (and in $MILKIT_TEST_ARTIFACTS)."""
    def save(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        assert browser.save_screenshot(str(path))
        if os.environ.get("MILKIT_TEST_ARTIFACTS"):
            target = Path(os.environ["MILKIT_TEST_ARTIFACTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)
        return path
    return save


def wait_for(browser, script: str, timeout: float = 20.0):
    """Poll a JS expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.execute_script(f"return {script}")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.1)


def cohort_ids(browser) -> list[str]:
    return browser.execute_script("return [...document.querySelectorAll('#cohort tbody tr')].map(r => r.dataset.slide)")


def test_cohort_page_sorts_filters_and_opens_a_slide(browser, server, trained, shot):
    browser.get(server.url + "/")
    wait_for(browser, "window.milkitCohortReady")
    ids = cohort_ids(browser)
    assert trained["slide"] in ids and len(ids) == 36
    headers = [h.text for h in browser.find_elements("css selector", "#cohort th")]
    assert headers[:3] == ["slide_id", "split", "fold"] and "pred" in headers and "p(pred)" in headers
    shot("view_cohort")
    select = browser.find_element("id", "split")
    select.find_element("css selector", "option[value=test]").click()
    tests = cohort_ids(browser)
    assert trained["slide"] in tests and 0 < len(tests) < 36
    split_col = headers.index("split")
    assert {r.find_elements("tag name", "td")[split_col].text for r in browser.find_elements("css selector", "#cohort tbody tr")} == {"test"}
    p_col = headers.index("p(pred)")
    browser.find_elements("css selector", "#cohort th")[p_col].click()     # ascending
    browser.find_elements("css selector", "#cohort th")[p_col].click()     # descending
    values = [float(r.find_elements("tag name", "td")[p_col].text) for r in browser.find_elements("css selector", "#cohort tbody tr")]
    assert values == sorted(values, reverse=True)
    browser.find_element("link text", trained["slide"]).click()
    wait_for(browser, "window.milkitView && window.milkitView.ready")
    assert browser.find_element("id", "title").text == trained["slide"]


def test_slide_page_overlay_toggle_top_k_flight_and_colour_map(browser, server, trained, shot):
    browser.get(f"{server.url}/slide/{trained['slide']}")
    wait_for(browser, "window.milkitView.ready && window.milkitView.panes[0].overlayState === 'loaded'")
    wait_for(browser, "document.querySelectorAll('.topk img').length === 8 && "
                      "[...document.querySelectorAll('.topk img')].every(i => i.complete && i.naturalWidth > 0)")
    wait_for(browser, "window.milkitView.panes[0].viewer.world.getItemAt(0).getFullyLoaded()")
    assert browser.execute_script("return window.milkitView.panes[0].viewer.world.getItemCount()") == 2  # slide + heatmap
    assert browser.execute_script("return window.milkitView.tissue.length") == 1
    shot("view_slide")
    opacity = "return window.milkitView.panes[0].overlay.getOpacity()"
    assert browser.execute_script(opacity) == pytest.approx(0.5)
    browser.find_element("id", "show-overlay").click()
    assert browser.execute_script(opacity) == 0
    browser.find_element("id", "show-overlay").click()
    assert browser.execute_script(opacity) == pytest.approx(0.5)

    centre = "const c = window.milkitView.panes[0].viewer.viewport.getCenter(true); return [c.x, c.y]"
    zoom = "return window.milkitView.panes[0].viewer.viewport.getZoom(true)"
    before, zoom_before = browser.execute_script(centre), browser.execute_script(zoom)
    top = browser.execute_script("return window.milkitView.panes[0].top[0]")
    width = browser.execute_script("return window.milkitView.info.width")
    target = [(top["x"] + top["size"] / 2) / width, (top["y"] + top["size"] / 2) / width]
    browser.find_element("css selector", ".topk figure[data-rank='0']").click()
    arrived = (f"(() => {{ const c = window.milkitView.panes[0].viewer.viewport.getCenter(true);"
               f" return Math.abs(c.x - {target[0]}) < 0.01 && Math.abs(c.y - {target[1]}) < 0.01; }})()")
    wait_for(browser, arrived, timeout=10)                    # centred on the patch (viewport units: slide width = 1)
    after, zoom_after = browser.execute_script(centre), browser.execute_script(zoom)
    assert after != pytest.approx(before, abs=1e-3)
    assert zoom_after > 2 * zoom_before
    assert browser.execute_script("return window.milkitView.panes[0].highlight.rank") == 0
    wait_for(browser, "window.milkitView.panes[0].viewer.world.getItemAt(0).getFullyLoaded()")
    shot("view_slide_top_patch")

    first = browser.execute_script("return window.milkitView.panes[0].overlay.source.url")   # colour map changed
    browser.find_element("css selector", "#cmap option[value=viridis]").click()
    wait_for(browser, "window.milkitView.panes[0].overlayState === 'loaded' && "
                      f"window.milkitView.panes[0].overlay.source.url !== {first!r}")
    assert browser.execute_script("return window.milkitView.panes[0].viewer.world.getItemCount()") == 2
    assert "68, 1, 84" in browser.execute_script("return getComputedStyle(document.getElementById('colourbar')).backgroundImage")


def test_two_runs_side_by_side_stay_in_sync(browser, trained, view_registries, shot):
    from milkit.view.viewer import Viewer

    viewer = Viewer.open([trained["run"], trained["run"]], slide_dirs=[trained["slides"]], registries=view_registries)
    s = Server(viewer)
    try:
        browser.get(f"{s.url}/slide/{trained['slide']}")
        wait_for(browser, "window.milkitView.ready && window.milkitView.panes.every(p => p.overlayState === 'loaded')")
        assert browser.execute_script("return window.milkitView.panes.length") == 2
        browser.execute_script("const v = window.milkitView.panes[0].viewer.viewport;"
                               "v.zoomTo(3, null, true); v.panTo(new OpenSeadragon.Point(0.3, 0.2), true);")
        time.sleep(0.3)
        a, b = browser.execute_script("return window.milkitView.panes.map(p => { const c = p.viewer.viewport.getCenter(true);"
                                      " return [c.x, c.y, p.viewer.viewport.getZoom(true)]; })")
        assert a == pytest.approx([0.3, 0.2, 3], abs=1e-3) and b == pytest.approx(a, abs=1e-3)
        headers = [h.text for h in browser.find_elements("css selector", ".pane h2")]
        assert headers[0].startswith("A: ") and headers[1].startswith("B: ")
        time.sleep(0.5)
        shot("view_compare")
    finally:
        s.stop()
        viewer.catalogue.close()


def test_report_run_shows_generated_and_reference_reports(browser, reports, view_registries, shot):
    from milkit.view.viewer import Viewer

    viewer = Viewer.open([reports], registries=view_registries)
    s = Server(viewer)
    try:
        browser.get(s.url + "/")
        wait_for(browser, "window.milkitCohortReady")
        headers = [h.text for h in browser.find_elements("css selector", "#cohort th")]
        assert "generated" in headers and "findings_agreement" in headers
        browser.get(f"{s.url}/slide/s031")
        wait_for(browser, "window.milkitView.ready && window.milkitView.panes[0].overlayState === 'error'")
        generated = browser.find_element("css selector", ".generated pre").text
        reference = browser.find_element("css selector", ".reference pre").text
        assert generated == "invasive carcinoma of type 1 . margins clear ."
        assert reference == "invasive carcinoma of type 2 . margins clear ."
        details = browser.find_element("id", "details").text
        assert "findings_agreement" in details
        if "ROUGE_L" in viewer.runs[0].fields("s031"):               # pycocoevalcap installed
            assert "BLEU_4" in details and "ROUGE_L" in details
        assert "no heatmap" in browser.find_element("css selector", ".status").text
        shot("view_report")
    finally:
        s.stop()
        viewer.catalogue.close()


def test_report_html_links_to_the_running_viewer(browser, server, trained, view_registries, tmp_path):
    from milkit.viz.html import write_run_report

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    for url in ("http://127.0.0.1:9", server.url):   # nothing listens; a viewer that serves another run
        report = write_run_report(run, registries=view_registries, viewer_url=url)
        browser.get(report.as_uri())
        time.sleep(0.5)
        assert not browser.find_element("id", "milkit-view-links").is_displayed()
        assert "milkit view" in browser.find_element("id", "milkit-view-hint").text

    write_run_report(trained["run"], registries=view_registries, viewer_url=server.url)
    browser.get((trained["run"] / "report.html").as_uri())
    wait_for(browser, "!document.getElementById('milkit-view-links').hidden")
    link = browser.find_element("css selector", f"#milkit-view a[data-slide='{trained['slide']}']")
    assert link.get_attribute("href") == f"{server.url}/slide/{trained['slide']}"
    link.click()
    wait_for(browser, "window.milkitView && window.milkitView.ready")
