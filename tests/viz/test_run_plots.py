"""write_run_plots on hand-made run dirs: what each task gets, and failures become notes."""

import json

from vizhelpers import assert_sensible_png, fake_run

from milkit.viz.run_heatmaps import pick_slides
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


def test_report_runs_get_a_table_not_an_image(tmp_path, registries):
    run = fake_run(tmp_path, "report")
    files = write_run_plots(run, heatmaps=0, registries=registries)
    table = json.loads((run / "plots" / "report_samples.json").read_text())
    assert run / "plots" / "report_samples.json" in files and len(table) == 9
    for row in table:
        assert {"slide_id", "generated", "reference", "BLEU_4", "ROUGE_L"} <= set(row)
        assert (row["ROUGE_L"] == 1.0) == (row["generated"] == row["reference"])


def test_broken_run_dir_gives_notes_not_exceptions(tmp_path, registries):
    run = fake_run(tmp_path, "classification")
    (run / "metrics.json").write_text("{not json")
    (run / "predictions.csv").write_text("fold,split,slide_id,target,pred,prob_c0\n0,test,s1,c0,c0,oops\n")
    files = write_run_plots(run, registries=registries)
    notes = _index(run)["notes"]
    assert files[-1].name == "index.json"
    assert any(n.startswith("metrics.json") for n in notes) and any(n.startswith("ROC") for n in notes)
    assert any(n.startswith("heatmaps") for n in notes)  # no checkpoint in a hand-made run


def test_pick_slides_is_diverse():
    cls = [{"slide_id": f"s{i}", "target": "a", "pred": p, "prob_a": pa, "prob_b": 1 - pa}
           for i, (p, pa) in enumerate([("a", 0.9), ("a", 0.95), ("b", 0.3), ("b", 0.1), ("a", 0.6)])]
    assert [s for s, _ in pick_slides(cls, 3)] == ["s1", "s3", "s0"]  # best 'a', best 'b', next most confident
    surv = [{"slide_id": f"s{i}", "risk": r, "time": 1.0, "event": 1} for i, r in enumerate([0.1, 2.0, -1.0, 0.5])]
    picked = pick_slides(surv, 3)
    assert [s for s, _ in picked] == ["s1", "s0", "s2"] and "highest" in picked[0][1]
