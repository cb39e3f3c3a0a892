"""The ``multitarget`` head: contract, config checks, per-target encodings, the summed loss, masked
missing labels, per-target metrics against scikit-learn, plots, and a run with empty cells."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from sklearn.metrics import balanced_accuracy_score

from milkit.aggregator import AggregatorOutput
from milkit.components.heads.multitarget import IGNORE, MultiTargetClassification, MultiTargetConfig, label_of
from milkit.errors import DataError
from milkit.testing import check_head
from milkit.viz.rundata import RunView
from milkit.viz.sink import PlotSink

ROWS = [
    {"slide_id": "s0", "case_id": "c0", "subtype": "a", "necrosis": "", "grade": 1},
    {"slide_id": "s1", "case_id": "c1", "subtype": "b", "necrosis": "present", "grade": 2.0},
    {"slide_id": "s2", "case_id": "c2", "subtype": "a", "necrosis": "absent", "grade": None},
    {"slide_id": "s3", "case_id": "c3", "subtype": "c", "necrosis": "present", "grade": 1.0},
    {"slide_id": "s4", "case_id": "c4", "subtype": "b", "necrosis": None, "grade": float("nan")},
    {"slide_id": "s5", "case_id": "c5", "subtype": "a", "necrosis": "absent", "grade": 3},
]
COLUMNS = ["subtype", "necrosis", "grade"]


def make(**cfg) -> MultiTargetClassification:
    config = MultiTargetConfig(label_columns=COLUMNS, **cfg)
    torch.manual_seed(0)
    return MultiTargetClassification(config, in_dim=4, target_state=MultiTargetClassification.fit_targets(config, ROWS))


def test_contract_and_registration(registries) -> None:
    check_head(MultiTargetClassification, {"label_columns": ["label", "event"], "n_boot": 20})
    check_head(MultiTargetClassification, {"label_columns": ["label", "event"], "class_weights": "balanced",
                                           "target_weights": [1.0, 0.5], "dropout": 0.2, "n_boot": 0})
    check_head(MultiTargetClassification, {"label_columns": COLUMNS, "n_boot": 0}, rows=ROWS)
    assert registries.heads.get("multitarget") is MultiTargetClassification
    assert (MultiTargetClassification.monitor, MultiTargetClassification.monitor_mode) == ("balanced_accuracy", "max")
    config = MultiTargetConfig(label_columns=COLUMNS)
    assert MultiTargetClassification.required_columns(config) == tuple(COLUMNS)
    assert MultiTargetClassification.strata(config, ROWS) == ["a", "b", "a", "c", "b", "a"]   # the first column


@pytest.mark.parametrize(("cfg", "message"), [
    ({"label_columns": []}, "at least 1 item"),
    ({"label_columns": ["x", "y", "x"]}, "'x' more than once"),
    ({"label_columns": ["x", "y"], "target_weights": [1.0]}, "1 value(s) but label_columns names 2"),
    ({"label_columns": ["x", "y"], "target_weights": [1.0, -1.0]}, ">= 0 with at least one > 0"),
    ({"label_columns": ["x"], "class_weights": "inverse"}, "'balanced'"),
])
def test_config_errors_say_what_is_wrong(cfg: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MultiTargetConfig(**cfg)


def test_label_of_treats_empty_cells_as_missing() -> None:
    assert [label_of(v) for v in ("", "  ", None, float("nan"))] == [None] * 4
    assert [label_of(v) for v in (2.0, 2, "2", "present", 1.5, 0)] == ["2", "2", "2", "present", "1.5", "0"]


def test_per_target_encodings_and_balanced_weights() -> None:
    config = MultiTargetConfig(label_columns=COLUMNS, class_weights="balanced")
    state = MultiTargetClassification.fit_targets(config, ROWS)
    assert state["classes"] == {"subtype": ["a", "b", "c"], "necrosis": ["absent", "present"], "grade": ["1", "2", "3"]}
    assert list(state["classes"]) == COLUMNS and state["missing_in_train"] == {"subtype": 0, "necrosis": 2, "grade": 2}
    assert state["class_weights"]["subtype"] == pytest.approx([6 / (3 * 3), 6 / (3 * 2), 6 / (3 * 1)])
    assert state["class_weights"]["grade"] == pytest.approx([4 / (3 * 2), 4 / 3, 4 / 3])
    head = MultiTargetClassification(config, in_dim=4, target_state=json.loads(json.dumps(state)))
    targets = head.collate_targets(ROWS + [{"slide_id": "new", "subtype": "zzz", "necrosis": "absent", "grade": 2}])
    assert targets["subtype"].tolist() == [0, 1, 0, 2, 1, 0, IGNORE]          # an unseen class is ignored too
    assert targets["necrosis"].tolist() == [IGNORE, 1, 0, 1, IGNORE, 0, 0]
    assert targets["grade"].tolist() == [0, 1, IGNORE, 0, IGNORE, 2, 1]


def test_a_target_needs_two_classes_and_check_rows_flags_empty_columns() -> None:
    rows = [{"slide_id": f"s{i}", "a": "x" if i % 2 else "y", "b": "same" if i < 2 else ""} for i in range(4)]
    with pytest.raises(DataError, match=r"2 labelled slide\(s\) and only 1 class\(es\) \('same'\) in column 'b'"):
        MultiTargetClassification.fit_targets(MultiTargetConfig(label_columns=["a", "b"]), rows)
    empty = [{**r, "b": None} for r in rows]
    (problem,) = MultiTargetClassification.check_rows(MultiTargetConfig(label_columns=["a", "b"]), empty)
    assert "column 'b' is empty for all 4 slide(s)" in problem
    assert MultiTargetClassification.check_rows(MultiTargetConfig(label_columns=["a", "b"]), rows) == []


def test_loss_is_the_weighted_sum_of_masked_per_target_means() -> None:
    head = make(target_weights=[1.0, 2.0, 0.5])
    x = AggregatorOutput(embedding=torch.randn(6, 4, generator=torch.Generator().manual_seed(1)))
    targets = head.collate_targets(ROWS)
    out = head(x)
    expected = 0.0
    for col, w in zip(COLUMNS, (1.0, 2.0, 0.5)):
        logits, y = out.values[f"{col}/logits"], targets[col]
        keep = y != IGNORE
        per_slide = [F.cross_entropy(logits[i:i + 1], y[i:i + 1]).item() for i in range(6) if keep[i]]
        expected += w * sum(per_slide) / len(per_slide)
    assert head.loss(out, targets).item() == pytest.approx(expected, rel=1e-6)


def test_balanced_weights_give_torchs_weighted_mean() -> None:
    head = make(class_weights="balanced")
    x = AggregatorOutput(embedding=torch.randn(6, 4, generator=torch.Generator().manual_seed(2)))
    targets = head.collate_targets(ROWS)
    out = head(x)
    losses = head.target_losses(out, targets)
    for i, col in enumerate(COLUMNS):
        want = F.cross_entropy(out.values[f"{col}/logits"], targets[col], weight=getattr(head, f"class_weights_{i}"),
                               ignore_index=IGNORE)
        assert losses[col].item() == pytest.approx(want.item(), rel=1e-6)


def test_a_missing_label_gets_no_gradient_but_the_slide_still_trains_the_others() -> None:
    head = make()
    x = AggregatorOutput(embedding=torch.randn(6, 4, generator=torch.Generator().manual_seed(3)))
    targets = head.collate_targets(ROWS)
    out = head(x)
    for value in out.values.values():
        value.retain_grad()
    head.loss(out, targets).backward()
    necrosis, grade, subtype = (out.values[f"{c}/logits"].grad for c in ("necrosis", "grade", "subtype"))
    assert torch.all(necrosis[[0, 4]] == 0) and torch.all(necrosis[[1, 2, 3, 5]].abs().sum(1) > 0)
    assert torch.all(grade[[2, 4]] == 0) and torch.all(grade[[0, 1, 3, 5]].abs().sum(1) > 0)
    assert torch.all(subtype.abs().sum(1) > 0)                                 # s0 and s4 still train the subtype


def test_a_batch_without_any_label_of_a_target_contributes_zero() -> None:
    head = make()
    rows = [ROWS[0], ROWS[4]]                                                  # necrosis missing in both
    x = AggregatorOutput(embedding=torch.randn(2, 4, requires_grad=True))
    targets = head.collate_targets(rows)
    losses = head.target_losses(head(x), targets)
    assert losses["necrosis"].item() == 0.0 and losses["subtype"].item() > 0
    head.loss(head(x), targets).backward()
    necrosis_layer = head.classifiers[COLUMNS.index("necrosis")]
    assert torch.all(necrosis_layer.weight.grad == 0) and torch.isfinite(x.embedding.grad).all()


def test_predict_records_name_each_target() -> None:
    head = make().eval()
    with torch.no_grad():
        records = head.predict(AggregatorOutput(embedding=torch.randn(6, 4)), ROWS)
    assert list(records[0]) == ["slide_id",
                                "subtype/target", "subtype/pred", "subtype/prob_a", "subtype/prob_b", "subtype/prob_c",
                                "necrosis/target", "necrosis/pred", "necrosis/prob_absent", "necrosis/prob_present",
                                "grade/target", "grade/pred", "grade/prob_1", "grade/prob_2", "grade/prob_3"]
    assert [r["necrosis/target"] for r in records] == ["", "present", "absent", "present", "", "absent"]
    assert [r["grade/target"] for r in records] == ["1", "2", "", "1", "", "3"]
    assert all(r["necrosis/pred"] in ("absent", "present") for r in records)   # every slide gets a prediction
    assert all(sum(r[f"subtype/prob_{c}"] for c in "abc") == pytest.approx(1.0) for r in records)


def test_metrics_per_target_match_sklearn_on_the_labelled_slides() -> None:
    head = make(n_boot=200).eval()
    with torch.no_grad():
        records = head.predict(AggregatorOutput(embedding=torch.randn(6, 4, generator=torch.Generator().manual_seed(4))),
                               ROWS)
    m = head.metrics(records)
    per_target = {}
    for col in COLUMNS:
        labelled = [r for r in records if r[f"{col}/target"] != ""]
        want = balanced_accuracy_score([r[f"{col}/target"] for r in labelled], [r[f"{col}/pred"] for r in labelled])
        assert m[f"{col}/balanced_accuracy"] == pytest.approx(want) and m[f"{col}/n_labelled"] == len(labelled)
        low, high = m[f"{col}/balanced_accuracy_ci95"]
        assert low <= high
        per_target[col] = want
    assert m["balanced_accuracy"] == pytest.approx(sum(per_target.values()) / 3)
    assert m["necrosis/classes"] == ["absent", "present"] and len(m["grade/confusion_matrix"]) == 3
    quick = head.validation_metrics(records)
    assert quick["balanced_accuracy"] == m["balanced_accuracy"] and not any(k.endswith("_ci95") for k in quick)


def test_plots_and_heatmap_slides(tmp_path: Path) -> None:
    head = make().eval()
    with torch.no_grad():
        records = head.predict(AggregatorOutput(embedding=torch.randn(6, 4)), ROWS)
    rows = [{"fold": 0, "split": "test", **r} for r in records]
    sink = PlotSink(tmp_path)
    MultiTargetClassification.plots(RunView(tmp_path, {}, rows, "test"), sink)
    assert [i["file"] for i in sink.items] == ["roc_0_subtype.png", "confusion_matrix_0_subtype.png",
                                               "roc_1_necrosis.png", "confusion_matrix_1_necrosis.png",
                                               "roc_2_grade.png", "confusion_matrix_2_grade.png"]
    assert not sink.notes and all((tmp_path / i["file"]).is_file() for i in sink.items)
    picked = MultiTargetClassification.heatmap_slides(records, 3)
    assert len(picked) == 3 and all(why.startswith("subtype: true ") for _, why in picked)
    assert MultiTargetClassification.heatmap_slides([], 3) == []


def test_run_with_empty_cells_keeps_every_slide(tmp_path, registries, synthetic_cohort, monkeypatch) -> None:
    """A second label column with every fifth cell empty: no slide is dropped, and the empties are masked."""
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe

    monkeypatch.setattr("milkit.runner.write_visuals", lambda run_dir, registries=None: None)
    with synthetic_cohort.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        r["high"] = "" if i % 5 == 0 else ("yes" if r["label"] == "class2" else "no")
    with synthetic_cohort.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""[run]\nname = "mt"\nseed = 0\n[cohort]\ncsv = "{synthetic_cohort}"\nval_fraction = 0.25
test_fraction = 0.25\n[aggregator]\nname = "abmil"\nembed_dim = 16\nattn_dim = 8\n[head]\nname = "multitarget"
label_columns = ["label", "high"]\nn_boot = 50\n[train]\nepochs = 10\nbatch_size = 4\nlr = 2e-2\n""")
    run_dir = run_recipe(validate_recipe(load_recipe(recipe), registries), registries, out=tmp_path / "run",
                         progress=False)
    splits = json.loads((run_dir / "splits.json").read_text())["folds"][0]
    assert sum(len(v) for v in splits.values()) == len(rows)                    # nobody dropped
    with (run_dir / "predictions.csv").open(newline="") as f:
        predictions = list(csv.DictReader(f))
    test = [p for p in predictions if p["split"] == "test"]
    assert [p["slide_id"] for p in test] == splits["test"]
    empty = {r["slide_id"] for r in rows if r["high"] == ""}
    assert all((p["high/target"] == "") == (p["slide_id"] in empty) for p in test) and all(p["high/pred"] for p in test)
    metrics = json.loads((run_dir / "metrics.json").read_text())["folds"][0]["metrics"]["test"]
    assert metrics["high/n_labelled"] == sum(p["high/target"] != "" for p in test)
    assert metrics["label/balanced_accuracy"] >= 0.75 and math.isfinite(metrics["balanced_accuracy"])
    state = json.loads((run_dir / "fold_0/target_state.json").read_text())
    assert state["classes"] == {"label": ["class0", "class1", "class2"], "high": ["no", "yes"]}
