"""report.html: self-contained, escaped, with the numbers of the run; compare report from real files."""

import base64
import io
import re

import pytest

from PIL import Image
from vizhelpers import fake_run

from milkit.compare.runner import write_comparison
from milkit.viz.html import write_compare_report, write_run_report
from milkit.viz.run_plots import write_run_plots

IMG = re.compile(r'<img src="([^"]*)"')


def _self_contained(page: str) -> list[bytes]:
    """Every <img> is an embedded PNG that decodes; no external resource is referenced; the only script is
    the one that looks for a running milkit view (tests/viz/test_html_viewer_links.py)."""
    page = re.sub(r'<div id="milkit-view">.*?<script>\(function\(\)\{var base=.*?</script></div>', "", page, flags=re.S)
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "<link" not in page and "<script" not in page
    pngs = []
    for src in IMG.findall(page):
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        Image.open(io.BytesIO(data)).verify()
        pngs.append(data)
    return pngs


def test_run_report_is_self_contained_and_shows_the_metrics(tmp_path, registries):
    run = fake_run(tmp_path, "classification")
    write_run_plots(run, heatmaps=0, registries=registries)
    page = write_run_report(run, registries=registries).read_text()
    assert len(_self_contained(page)) == 3                      # curves, ROC, confusion matrix
    m = __import__("json").loads((run / "metrics.json").read_text())["folds"][0]["metrics"]["test"]["m"]
    assert f"{m:.4g}" in page and f"[{m - 0.1:.4g}, {m + 0.1:.4g}]" in page  # value and its CI
    for text in ("train slides", "patches min", "Recipe (resolved)", "selected epoch", "1,234"):
        assert text in page
    assert "[aggregator]" in page and "<pre>" in page


def test_several_folds_show_mean_and_std(tmp_path, registries):
    run = fake_run(tmp_path, "survival", folds=3)
    write_run_plots(run, heatmaps=0, registries=registries)
    page = write_run_report(run, registries=registries).read_text()
    assert "mean ± std over folds" in page and re.search(r"0\.7\d* ± 0\.0\d+", page)
    assert "fold 0, test: ibs: NaN" in page                    # metric warnings are shown as notes


@pytest.mark.histgen
def test_text_is_escaped_and_failures_are_notes(tmp_path, registries):
    run = fake_run(tmp_path, "report")
    (run / "recipe.toml").write_text('[run]\nname = "<script>alert(1)</script>"\n')  # cannot be validated
    page = write_run_report(run, registries=registries).read_text()  # plots are written on demand
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "could not be built" in page                        # the Data section needs a valid recipe
    assert "Generated vs reference reports" in page and "BLEU-4" in page
    assert (run / "plots" / "index.json").is_file()


def test_missing_metrics_still_writes_a_page(tmp_path, registries):
    run = fake_run(tmp_path, "classification")
    (run / "metrics.json").unlink()
    page = write_run_report(run, registries=registries).read_text()
    assert "metrics.json unreadable" in page and "</html>" in page


def test_compare_report(tmp_path, registries):
    out = tmp_path / "cmp"
    run = fake_run(tmp_path, "classification")
    out.mkdir()
    for name in ("recipe.toml", "splits.json"):
        (out / name).write_text((run / name).read_text())
    def stat(m):
        return {"mean": m, "std": 0.02, "ci95": [m - 0.05, m + 0.05], "n": 5}

    rows = [{"aggregator": "abmil", "n_runs": 5, "auc": stat(0.91), "n_parameters": 4321, "seconds_per_epoch": 0.5,
             "peak_memory_mb": 10.0, "inference_seconds_per_slide": 0.01,
             "vs_best": {"method": "wilcoxon", "p_value": None, "within_noise": None, "is_best": True}},
            {"aggregator": "<mean>", "n_runs": 5, "auc": stat(0.85), "n_parameters": 99, "seconds_per_epoch": 0.2,
             "peak_memory_mb": 5.0, "inference_seconds_per_slide": 0.005,
             "vs_best": {"method": "wilcoxon", "p_value": 0.0625, "within_noise": True, "is_best": False}}]
    write_comparison(out, {"metric": "auc", "mode": "max", "best": "abmil", "folds": 5, "seeds": [0], "rows": rows,
                           "runs": {"abmil": [0.9, 0.92, 0.89, 0.93, 0.91], "<mean>": [0.85] * 5}})
    page = write_compare_report(out, registries=registries).read_text()
    assert len(_self_contained(page)) == 1                     # comparison.png (no per-epoch logs here)
    for text in ("0.91 ± 0.02", "[0.86, 0.96]", "&lt;mean&gt;", "p = 0.0625 (within noise)", "4,321", "test slides"):
        assert text in page, text
    assert "no per-epoch validation logs" in page
