"""report.html's "Slides in milkit view" section (milkit/viz/html.py): a link per slide, shown only while a
viewer that serves this run answers; the page stays self-contained."""

import re

from vizhelpers import fake_run

from milkit.view.runs import run_token
from milkit.viz.html import VIEWER_URL, write_run_report


def _report(tmp_path, **kw) -> str:
    run = fake_run(tmp_path, "classification")
    (run / "plots").mkdir()
    (run / "plots" / "index.json").write_text('{"items": [], "notes": []}')
    return write_run_report(run, **kw).read_text(), run


def test_links_every_predicted_slide_hidden_until_a_viewer_answers(tmp_path):
    page, run = _report(tmp_path)
    section = page[page.index("<h2>Slides in milkit view</h2>"):]
    slides = re.findall(r'<a data-slide="([^"]+)">', section)
    assert len(slides) == 16 and len(set(slides)) == 16        # val + test slides of the fake run
    assert '<div id="milkit-view-links" hidden>' in section
    assert f"milkit view {run.resolve()}" in section
    assert f'var base="{VIEWER_URL}",token="{run_token(run)}"' in section
    assert "/api/ping?run=" in section


def test_viewer_url_from_the_argument_or_the_environment(tmp_path, monkeypatch):
    page, _ = _report(tmp_path / "a", viewer_url="http://127.0.0.1:8123/")
    assert 'var base="http://127.0.0.1:8123"' in page
    monkeypatch.setenv("MILKIT_VIEW_URL", "http://localhost:9000")
    page, _ = _report(tmp_path / "b")
    assert 'var base="http://localhost:9000"' in page


def test_the_page_loads_nothing_from_outside(tmp_path):
    page, _ = _report(tmp_path, viewer_url="http://x</script><b>")
    assert not re.search(r'(src|href)="https?:', page)          # links get their href only from the probe
    assert page.count("</script>") == 1 and "<\\/script>" in page
