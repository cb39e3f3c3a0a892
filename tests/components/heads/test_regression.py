"""The ``regression`` head: contract, losses, standardisation, metrics against SciPy/scikit-learn,
quantile strata, bad-input messages, learning, plots, and a run end to end."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from milkit.aggregator import AggregatorOutput
from milkit.components.heads.regression import Regression, RegressionConfig
from milkit.data.splits import make_splits
from milkit.errors import DataError
from milkit.metrics.bootstrap import bootstrap_indices
from milkit.metrics.regression import quantile_bins, regression_ci, regression_metrics, regression_resampled
from milkit.testing import check_head
from milkit.viz.rundata import RunView
from milkit.viz.sink import PlotSink


def rows_of(values: list[float], column: str = "target") -> list[dict]:
    return [{"slide_id": f"s{i}", "case_id": f"c{i}", column: v} for i, v in enumerate(values)]


def head_with(scores: list[float], *, mean: float, std: float, **cfg) -> Regression:
    """A head whose output is ``scores`` (standardised units) for one-hot embeddings of width len(scores)."""
    head = Regression(RegressionConfig(**cfg), in_dim=len(scores), target_state={"mean": mean, "std": std,
                                                                                 "train_mean": mean})
    with torch.no_grad():
        head.output[1].weight.copy_(torch.tensor([scores]))
        head.output[1].bias.zero_()
    return head.eval()


def one_hot(n: int) -> AggregatorOutput:
    return AggregatorOutput(embedding=torch.eye(n))


def test_contract_registration_and_modes(registries) -> None:
    check_head(Regression, {"n_boot": 20})
    check_head(Regression, {"loss": "huber", "standardise": False, "target_column": "time", "n_boot": 0})
    assert registries.heads.get("regression") is Regression
    assert (Regression.monitor, Regression.monitor_mode) == ("r2", "max")
    assert Regression.required_columns(RegressionConfig(target_column="tf")) == ("tf",)
    modes = {m: Regression.metric_mode(m) for m in ("r2", "pearson_r", "spearman_r", "mae", "rmse", "loss")}
    assert modes == {"r2": "max", "pearson_r": "max", "spearman_r": "max", "mae": "min", "rmse": "min", "loss": "min"}


@pytest.mark.parametrize(("loss", "expected"), [
    ("mse", (0.5 ** 2 + 1.0 ** 2 + 3.0 ** 2) / 3),
    ("l1", (0.5 + 1.0 + 3.0) / 3),
    ("huber", (0.5 * 0.5 ** 2 + 0.5 * 1.0 ** 2 + (3.0 - 0.5)) / 3),      # delta 1: quadratic up to |e| = 1
])
def test_loss_values_on_a_hand_made_batch(loss: str, expected: float) -> None:
    # targets 6, 10, 2 with mean 2, std 4 standardise to 1, 2, 0; the scores are off by 0.5, -1, 3
    head = head_with([1.5, 1.0, 3.0], mean=2.0, std=4.0, loss=loss)
    targets = head.collate_targets(rows_of([6.0, 10.0, 2.0]))
    assert targets["target"].tolist() == [1.0, 2.0, 0.0]
    value = head.loss(head(one_hot(3)), targets)
    assert value.item() == pytest.approx(expected)


def test_huber_delta_is_in_standardised_units() -> None:
    head = head_with([3.0], mean=0.0, std=10.0, loss="huber", huber_delta=2.0)
    value = head.loss(head(one_hot(1)), head.collate_targets(rows_of([0.0])))
    assert value.item() == pytest.approx(2.0 * (3.0 - 1.0))                 # delta (|e| - delta / 2)


def test_standardisation_round_trip() -> None:
    values = [0.2, 0.35, 0.5, 0.9, 0.65]
    rows = rows_of(values)
    state = Regression.fit_targets(RegressionConfig(), rows)
    assert state["mean"] == pytest.approx(np.mean(values)) and state["std"] == pytest.approx(np.std(values))
    head = Regression(RegressionConfig(), in_dim=len(values), target_state=state)
    z = head.collate_targets(rows)["target"]
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6) and z.std(correction=0).item() == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():                                                    # output the standardised targets
        head.output[1].weight.copy_(z[None, :])
        head.output[1].bias.zero_()
    head.eval()
    records = head.predict(one_hot(len(values)), rows)
    assert [r["pred"] for r in records] == pytest.approx(values, abs=1e-6)
    assert [r["target"] for r in records] == values and records[0]["slide_id"] == "s0"
    raw = Regression.fit_targets(RegressionConfig(standardise=False), rows)
    assert (raw["mean"], raw["std"]) == (0.0, 1.0) and raw["train_mean"] == pytest.approx(np.mean(values))


def test_fit_targets_refuses_a_constant_or_tiny_training_split() -> None:
    with pytest.raises(DataError, match="same 'target'"):
        Regression.fit_targets(RegressionConfig(), rows_of([3.0, 3.0, 3.0]))
    with pytest.raises(DataError, match="at least two"):
        Regression.fit_targets(RegressionConfig(), rows_of([3.0]))


def test_check_rows_names_missing_and_non_numeric_slides() -> None:
    rows = rows_of([0.5, "", None, "high", float("nan"), math.inf, "0.25", True], column="tf")
    (problem,) = Regression.check_rows(RegressionConfig(target_column="tf"), rows)
    assert "column 'tf'" in problem and "6 slide(s)" in problem
    assert all(f"s{i} " in problem for i in (1, 2, 3, 4, 5)) and "'high'" in problem
    assert "s0 " not in problem and "s6 " not in problem                     # "0.25" is a number
    assert Regression.check_rows(RegressionConfig(), rows_of([1, 2.5, "3"])) == []


FIXED_Y = [0.41, 0.55, 0.62, 0.38, 0.77, 0.5, 0.66, 0.45, 0.71, 0.59]
FIXED_P = [0.45, 0.5, 0.6, 0.44, 0.7, 0.58, 0.61, 0.41, 0.75, 0.52]


def fixed_records() -> list[dict]:
    return [{"slide_id": f"s{i}", "target": y, "pred": p} for i, (y, p) in enumerate(zip(FIXED_Y, FIXED_P))]


def test_metrics_match_scipy_and_sklearn() -> None:
    m = regression_metrics(fixed_records(), baseline=0.5)
    assert m["n"] == 10
    assert m["r2"] == pytest.approx(r2_score(FIXED_Y, FIXED_P))
    assert m["pearson_r"] == pytest.approx(pearsonr(FIXED_Y, FIXED_P).statistic)
    assert m["spearman_r"] == pytest.approx(spearmanr(FIXED_Y, FIXED_P).statistic)
    assert m["mae"] == pytest.approx(mean_absolute_error(FIXED_Y, FIXED_P))
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(FIXED_Y, FIXED_P)))
    assert m["mae_baseline"] == pytest.approx(np.mean(np.abs(np.array(FIXED_Y) - 0.5)))


def test_undefined_metrics_are_nan_not_errors() -> None:
    constant = [{"slide_id": "a", "target": 1.0, "pred": 0.5}, {"slide_id": "b", "target": 1.0, "pred": 0.7}]
    m = regression_metrics(constant)
    assert all(math.isnan(m[k]) for k in ("r2", "pearson_r", "spearman_r")) and m["mae"] == pytest.approx(0.4)
    assert all(math.isnan(v) for k, v in regression_metrics([]).items() if k != "n")


def test_resampled_metrics_agree_with_the_libraries_per_resample() -> None:
    records = fixed_records()
    idx = bootstrap_indices(len(records), 40, seed=1)
    fast = regression_resampled(records, idx)
    for b, row in enumerate(idx):
        want = regression_metrics([records[i] for i in row])
        for name in ("r2", "pearson_r", "spearman_r", "mae", "rmse"):
            if math.isnan(want[name]):
                assert math.isnan(fast[name][b]), (name, b)
            else:
                assert fast[name][b] == pytest.approx(want[name], abs=1e-9), (name, b)


def test_confidence_intervals_bracket_the_estimate() -> None:
    records = fixed_records()
    point, ci = regression_metrics(records), regression_ci(records, n_boot=500)
    assert set(ci) == {f"{m}_ci95" for m in ("r2", "pearson_r", "spearman_r", "mae", "rmse")}
    for name in ("pearson_r", "mae", "rmse"):
        low, high = ci[f"{name}_ci95"]
        assert low <= point[name] <= high and low < high
    head = Regression(RegressionConfig(n_boot=0), in_dim=2, target_state={"mean": 0.0, "std": 1.0})
    assert not any(k.endswith("_ci95") for k in head.metrics(records))


def test_quantile_strata_balance_splits_over_the_target_range() -> None:
    values = [float(v) for v in np.random.default_rng(0).uniform(0, 1, 80)]
    bins = quantile_bins(values, 4)
    assert sorted(set(bins)) == ["q1", "q2", "q3", "q4"] and all(bins.count(q) == 20 for q in set(bins))
    assert quantile_bins([1.0] * 6, 4) == ["q1"] * 6                          # repeated edges merge bins
    rows = rows_of(values)
    assert Regression.strata(RegressionConfig(), rows) == bins
    assert Regression.strata(RegressionConfig(stratify_bins=0), rows) is None
    (split,) = make_splits(rows, mode="holdout", seed=0, test_fraction=0.25, val_fraction=0.2, strata=bins)
    by_id = dict(zip((r["slide_id"] for r in rows), bins))
    for part in ("train", "val", "test"):
        counts = [sum(by_id[s] == q for s in split[part]) for q in ("q1", "q2", "q3", "q4")]
        assert max(counts) - min(counts) <= 1, (part, counts)


def test_learns_a_linear_target_and_picks_heatmap_slides() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(128, 6, generator=gen)
    y = 50.0 + 10.0 * emb[:, 0] - 5.0 * emb[:, 2]                              # far from 0 mean, unit 10s
    rows = rows_of(y.tolist())
    head = Regression(RegressionConfig(n_boot=0), in_dim=6, target_state=Regression.fit_targets(RegressionConfig(), rows))
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    targets = head.collate_targets(rows)
    for _ in range(100):
        opt.zero_grad()
        head.loss(head(AggregatorOutput(embedding=emb)), targets).backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        records = head.predict(AggregatorOutput(embedding=emb), rows)
    m = head.metrics(records)
    assert m["r2"] > 0.99 and m["mae"] < 0.1 * m["mae_baseline"]
    picked = Regression.heatmap_slides(records, 3)
    ranked = sorted(records, key=lambda r: r["pred"], reverse=True)
    assert [s for s, _ in picked] == [ranked[0]["slide_id"], ranked[len(ranked) // 2]["slide_id"], ranked[-1]["slide_id"]]
    assert picked[0][1].startswith("highest prediction")


def test_predicted_vs_true_plot(tmp_path: Path) -> None:
    (tmp_path / "recipe.toml").write_text('[head]\nname = "regression"\ntarget_column = "tumour_fraction"\n')
    records = [{"fold": i % 2, "split": "test", **r} for i, r in enumerate(fixed_records())]
    sink = PlotSink(tmp_path / "plots")
    sink.dir.mkdir()
    Regression.plots(RunView(tmp_path, {}, records, "test"), sink)
    assert not sink.notes and [i["file"] for i in sink.items] == ["predicted_vs_true.png"]
    assert (sink.dir / "predicted_vs_true.png").stat().st_size > 1000


def test_run_end_to_end_with_quantile_strata(tmp_path, registries, synthetic_cohort, monkeypatch) -> None:
    """A continuous column written into the synthetic cohort (a function of the class signal); the plots
    are tested above, so report.html is skipped here."""
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe

    monkeypatch.setattr("milkit.runner.write_visuals", lambda run_dir, registries=None: None)

    with synthetic_cohort.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["score"] = f"{int(r['label'][-1]) * 1.5 + 0.1 * (int(r['slide_id'][1:]) % 3):.2f}"
    with synthetic_cohort.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""[run]\nname = "reg"\nseed = 0\n[cohort]\ncsv = "{synthetic_cohort}"\nval_fraction = 0.25
test_fraction = 0.25\n[aggregator]\nname = "abmil"\nembed_dim = 16\nattn_dim = 8\n[head]\nname = "regression"
target_column = "score"\nn_boot = 50\n[train]\nepochs = 10\nbatch_size = 4\nlr = 2e-2\nmonitor = "mae"\n""")
    run_dir = run_recipe(validate_recipe(load_recipe(recipe), registries), registries, out=tmp_path / "run",
                         progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["folds"][0]["metrics"]["test"]
    assert metrics["monitor"] == "mae" and metrics["folds"][0]["monitor_mode"] == "min"
    assert test["r2"] > 0.7 and test["r2_ci95"][0] <= test["r2_ci95"][1]
    with (run_dir / "predictions.csv").open(newline="") as f:
        header = next(csv.reader(f))
    assert header == ["fold", "split", "slide_id", "target", "pred"]
    state = json.loads((run_dir / "fold_0/target_state.json").read_text())
    assert set(state) == {"mean", "std", "train_mean"}
