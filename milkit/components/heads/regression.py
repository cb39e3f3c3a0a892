"""Slide-level regression (biomarker scores, expression, tumour fraction): a linear output on the
embedding, trained on the standardised target, with R², correlations and errors as metrics."""

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput
from milkit.config import ComponentConfig
from milkit.errors import DataError
from milkit.head import Head, HeadOutput, Row

if TYPE_CHECKING:
    from milkit.viz.rundata import RunView
    from milkit.viz.sink import PlotSink


class RegressionConfig(ComponentConfig):
    target_column: str = Field("target", description="Cohort column holding the continuous target of each slide.")
    loss: Literal["mse", "l1", "huber"] = Field(
        "mse", description="mse (squared error), l1 (absolute error, as STAMP) or huber (squared below huber_delta).")
    huber_delta: float = Field(1.0, gt=0, description="Huber: error where the loss turns linear, in standardised "
                                                       "units (training std) when standardise, else target units.")
    standardise: bool = Field(
        True, description="Train on (target - mean) / std of the training split; undone in predictions.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the linear output.")
    stratify_bins: int = Field(4, ge=0, description="Quantile bins of the target that [cohort] stratify = 'auto' "
                                                   "balances across splits (0 or 1: no stratification).")
    n_boot: int = Field(1000, ge=0, description="Bootstrap resamples for the metrics' 95 % CIs (0 = none).")


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when missing, unparseable or infinite."""
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class Regression(Head):
    """Linear regression on the slide embedding: ``pred = mean + std * (w . embedding + b)``.

    The output is trained on the target standardised with the training split's mean and std
    (``fit_targets``), so the loss and ``huber_delta`` do not depend on the target's unit, and
    predictions are mapped back to it. Metrics: R² (monitored), Pearson r, Spearman ρ, MAE and
    RMSE with bootstrap CIs, and ``mae_baseline`` (always predicting the training mean). See
    docs/regression.md.
    """

    name = "regression"
    Config = RegressionConfig
    target_columns = ("target",)
    monitor = "r2"
    monitor_mode = "max"

    def __init__(self, config: RegressionConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        self.mean = float(target_state["mean"])
        self.std = float(target_state["std"])
        self.output = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(in_dim, 1))

    @classmethod
    def required_columns(cls, config: RegressionConfig) -> tuple[str, ...]:
        return (config.target_column,)

    @classmethod
    def strata(cls, config: RegressionConfig, rows: list[Row]) -> list[str] | None:
        """Quantile bins (``q1`` ... ``q<stratify_bins>``) of the target, so every split spans its range."""
        from milkit.metrics.regression import quantile_bins

        if config.stratify_bins < 2:
            return None
        values = [_number(r.get(config.target_column)) for r in rows]
        return quantile_bins([v if v is not None else math.nan for v in values], config.stratify_bins)

    @classmethod
    def metric_mode(cls, metric: str) -> str:
        """Errors (``mae``, ``rmse``, ``loss``) are minimised; R² and the correlations maximised."""
        from milkit.metrics.regression import MINIMISED

        return "min" if metric in MINIMISED or "loss" in metric else "max"

    @classmethod
    def check_rows(cls, config: RegressionConfig, rows: list[Row]) -> list[str]:
        col = config.target_column
        bad = [f"{r.get('slide_id', '?')} ({r.get(col)!r})" for r in rows if _number(r.get(col)) is None]
        if not bad:
            return []
        return [f"column '{col}' must hold a finite number for every slide; missing or not a number for "
                f"{len(bad)} slide(s): " + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
                + " (fill them in, or leave those slides out of the cohort table)"]

    @classmethod
    def fit_targets(cls, config: RegressionConfig, train_rows: list[Row]) -> dict[str, Any]:
        values = torch.tensor([_number(r.get(config.target_column)) for r in train_rows], dtype=torch.float64)
        if values.numel() < 2:
            raise DataError(f"the training split has {values.numel()} slide(s): regression on "
                            f"'{config.target_column}' needs at least two; add slides or lower the val/test fractions")
        mean, std = float(values.mean()), float(values.std(correction=0))
        if std == 0.0:
            raise DataError(f"every training slide has the same '{config.target_column}' ({mean:g}): there is "
                            "nothing to regress; check the column")
        if not config.standardise:
            mean, std = 0.0, 1.0
        return {"mean": mean, "std": std, "train_mean": float(values.mean())}

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        col = self.config.target_column
        y = torch.tensor([float(r[col]) for r in rows], dtype=torch.float32)                # b
        return {"target": (y - self.mean) / self.std}                                        # b, standardised

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        return HeadOutput({"score": self.output(x.embedding).squeeze(-1)})                  # b, standardised

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        pred, y = out.values["score"].float(), targets["target"].float()
        if self.config.loss == "l1":
            return F.l1_loss(pred, y)
        if self.config.loss == "huber":
            return F.huber_loss(pred, y, delta=self.config.huber_delta)
        return F.mse_loss(pred, y)

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        score = self.forward(x).values["score"].float().cpu().double()
        pred = (score * self.std + self.mean).tolist()                                       # target units
        col = self.config.target_column
        return [{"slide_id": r["slide_id"], "target": float(r[col]), "pred": p} for r, p in zip(rows, pred)]

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        from milkit.metrics.regression import regression_ci, regression_metrics

        out = regression_metrics(records, baseline=self.target_state.get("train_mean"))
        if self.config.n_boot and records:  # <metric>_ci95: [low, high], percentile bootstrap over slides
            out.update(regression_ci(records, n_boot=self.config.n_boot))
        return out

    def validation_metrics(self, records: list[Row]) -> dict[str, Any]:
        """The point estimates only (no bootstrap) for the per-epoch validation pass."""
        from milkit.metrics.regression import regression_metrics

        return regression_metrics(records, baseline=self.target_state.get("train_mean"))

    @classmethod
    def plots(cls, run: "RunView", sink: "PlotSink") -> None:
        """Predicted vs true scatter of the evaluation split."""
        from milkit.viz.task_plots import draw_regression_plots

        draw_regression_plots(run, sink)

    @classmethod
    def heatmap_slides(cls, records: list[Row], n: int) -> list[tuple[str, str]]:
        """The highest, median and lowest prediction."""
        ranked = sorted(records, key=lambda r: float(r["pred"]), reverse=True)
        chosen: list[tuple[str, str]] = []
        for i, what in ((0, "highest"), (len(ranked) // 2, "median"), (len(ranked) - 1, "lowest")):
            r = ranked[i]
            if all(str(r["slide_id"]) != s for s, _ in chosen):
                chosen.append((str(r["slide_id"]), f"{what} prediction ({float(r['pred']):.3g}; true "
                                                    f"{float(r['target']):.3g})"))
        return chosen[:n]
