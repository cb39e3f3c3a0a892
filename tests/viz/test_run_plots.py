"""write_run_plots on hand-made run dirs: what each task gets, and failures become notes."""

import json

import pytest

from vizhelpers import assert_sensible_png, fake_run

from milkit.viz.run_plots import write_run_plots


def _index(run):
    return json.loads((run / "plots" / "index.json").read_text())


def test_classification_plots_pool_the_folds(tmp_path, registries):
    run = fake_run(tmp_path, "classification", folds=3)
    files = write_run_plots(run, heatmaps=0, registries=registries)
    names = [f.name for f in files]
    assert names == ["training_curves.png", "roc.png", "confusion_matrix.png", "index.json"]
    for f in files[:-1]:
        assert_sensible_png(f)
    items = {i["file"]: i for i in _index(run)["items"]}
    assert "3 folds pooled" in items["roc.png"]["caption"] and _index(run)["notes"] == []


def test_survival_uses_the_training_median_from_result_json(tmp_path, registries):
    run = fake_run(tmp_path, "survival")
    files = write_run_plots(run, heatmaps=0, registries=registries)
    assert [f.name for f in files] == ["training_curves.png", "km_by_risk.png", "calibration.png", "index.json"]
    for f in files[:-1]:
        assert_sensible_png(f)
    items = {i["file"]: i for i in _index(run)["items"]}
    assert "training median" in items["km_by_risk.png"]["caption"] and "log-rank p =" in items["km_by_risk.png"]["caption"]
    assert "t=5" in items["calibration.png"]["caption"]  # the middle horizon of metrics.json


def test_survival_without_train_records_falls_back_to_val_and_says_so(tmp_path, registries):
    run = fake_run(tmp_path, "survival", folds=2, train_records=False)
    write_run_plots(run, heatmaps=0, registries=registries)
    index = _index(run)
    km = next(i for i in index["items"] if i["file"] == "km_by_risk.png")
    assert "validation median" in km["caption"] and "centred on each fold" in km["caption"]
    assert any(n.startswith("calibration") for n in index["notes"])


@pytest.mark.histgen
def test_report_runs_get_a_table_not_an_image(tmp_path, registries):
    run = fake_run(tmp_path, "report")
    files = write_run_plots(run, heatmaps=0, registries=registries)
    table = json.loads((run / "plots" / "report_samples.json").read_text())
    assert run / "plots" / "report_samples.json" in files and len(table["rows"]) == 9
    assert table["header"] == ["slide", "BLEU-4", "ROUGE-L", "generated", "reference"]
    for slide, _, rouge, generated, reference in table["rows"]:
        assert (float(rouge) == 1.0) == (generated == reference), slide


def test_broken_run_dir_gives_notes_not_exceptions(tmp_path, registries):
    run = fake_run(tmp_path, "classification")
    (run / "metrics.json").write_text("{not json")
    (run / "predictions.csv").write_text("fold,split,slide_id,target,pred,prob_c0\n0,test,s1,c0,c0,oops\n")
    files = write_run_plots(run, registries=registries)
    notes = _index(run)["notes"]
    assert files[-1].name == "index.json"
    assert any(n.startswith("metrics.json") for n in notes) and any(n.startswith("ROC") for n in notes)
    assert any(n.startswith("heatmaps") for n in notes)  # no checkpoint in a hand-made run
