"""Cox proportional-hazards survival head: linear risk, partial-likelihood loss, sksurv metrics."""

import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from milkit import distributed
from milkit.aggregator import AggregatorOutput
from milkit.components.heads.cox_loss import cox_partial_log_likelihood
from milkit.config import ComponentConfig
from milkit.errors import DataError
from milkit.head import SAMPLE_WEIGHT, Head, HeadOutput, Row

if TYPE_CHECKING:
    from milkit.viz.rundata import RunView
    from milkit.viz.sink import PlotSink

log = logging.getLogger("milkit")


class CoxConfig(ComponentConfig):
    ties: Literal["efron", "breslow"] = Field("efron", description="Tied event times: Efron (as R coxph) or Breslow.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the linear risk layer.")
    horizons: list[float] | None = Field(
        None, description="Times for td-AUC; default: quartiles of the training event times."
    )
    n_boot: int = Field(1000, ge=0, description="Bootstrap resamples for the c-index 95 % CI (0 = none).")


def _number(value: Any) -> float | None:
    """``value`` as a float, or None when missing/unparseable."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


class CoxSurvival(Head):
    """Cox survival head: ``risk = w . embedding + b`` (higher = earlier event).

    Loss: mean negative Cox partial log-likelihood over the bags of a batch (risk sets
    are formed within the batch, so ``[train] batch_size`` must be >= ``min_batch_size``).
    Metrics (scikit-survival): Harrell's C (monitored) with a bootstrap CI, Uno's C,
    time-dependent AUC, integrated Brier score (Breslow baseline from the train split).
    See docs/survival.md.
    """

    name = "cox"
    Config = CoxConfig
    target_columns = ("time", "event")
    monitor = "c_index"
    monitor_mode = "max"
    uses_train_records = True  # the Breslow baseline of the integrated Brier score and calibration
    loss_is_global = True  # the likelihood's risk sets span the global batch (all ranks)
    min_batch_size: ClassVar[int] = 8

    def __init__(self, config: CoxConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        self.risk = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(in_dim, 1))
        self._warned_batch = False

    @classmethod
    def check_rows(cls, config: CoxConfig, rows: list[Row]) -> list[str]:
        bad_time, bad_event = [], []
        for row in rows:
            sid = str(row.get("slide_id", "?"))
            t = _number(row.get("time"))
            if t is None or not math.isfinite(t) or t < 0:
                bad_time.append(f"{sid} ({row.get('time')!r})")
            e = _number(row.get("event"))
            if e not in (0.0, 1.0):
                bad_event.append(f"{sid} ({row.get('event')!r})")
        problems = []
        if bad_time:
            problems.append(f"column 'time' must be a finite number >= 0; bad for {len(bad_time)} slide(s): "
                            + ", ".join(bad_time[:5]) + (" ..." if len(bad_time) > 5 else ""))
        if bad_event:
            problems.append(f"column 'event' must be 0 (censored) or 1 (event); bad for {len(bad_event)} slide(s): "
                            + ", ".join(bad_event[:5]) + (" ..." if len(bad_event) > 5 else ""))
        return problems

    @classmethod
    def fit_targets(cls, config: CoxConfig, train_rows: list[Row]) -> dict[str, Any]:
        events = sum(_number(r.get("event")) == 1.0 for r in train_rows)
        if events == 0:
            raise DataError(f"the training split has {len(train_rows)} slide(s) and no event (every 'event' is 0): "
                            "the Cox partial likelihood is undefined; add slides with events or check the column")
        return {}

    @classmethod
    def stratify_column(cls, config: CoxConfig) -> str | None:
        return "event"

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        time = torch.tensor([float(r["time"]) for r in rows], dtype=torch.float32)          # b
        event = torch.tensor([float(r["event"]) for r in rows], dtype=torch.float32)        # b
        return {"time": time, "event": event}

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        return HeadOutput({"risk": self.risk(x.embedding).squeeze(-1)})                     # b

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        risk = out.values["risk"]
        if self.training and not self._warned_batch:
            self._warned_batch = True
            if risk.shape[0] * distributed.world_size() < self.min_batch_size:
                log.warning("cox head: a training batch holds %d bag(s); the partial likelihood compares bags "
                            "within a batch, so set [train] batch_size >= %d", risk.shape[0], self.min_batch_size)
        time, event = targets["time"], targets["event"]
        weight = targets.get(SAMPLE_WEIGHT)
        if self.training and distributed.active():  # risk sets over the global batch, not per rank
            risk, time, event = (distributed.all_gather_with_grad(t) for t in (risk, time, event))
            weight = distributed.all_gather_with_grad(weight) if weight is not None else None
        if weight is not None:  # rows a rank only ran to join the all-reduce carry weight 0
            keep = weight > 0
            risk, time, event = risk[keep], time[keep], event[keep]
        return cox_partial_log_likelihood(risk, time, event, ties=self.config.ties)

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        risk = self.forward(x).values["risk"].float().cpu().tolist()
        return [{"slide_id": r["slide_id"], "time": float(r["time"]), "event": int(float(r["event"])), "risk": v}
                for r, v in zip(rows, risk)]

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        from milkit.metrics.survival import survival_metrics

        return survival_metrics(records, train_records=train_records, horizons=self.config.horizons,
                                n_boot=self.config.n_boot)

    @classmethod
    def plots(cls, run: "RunView", sink: "PlotSink") -> None:
        """Kaplan-Meier curves by predicted risk group, and calibration."""
        from milkit.viz.task_plots import draw_survival_plots

        draw_survival_plots(run, sink)

    @classmethod
    def heatmap_slides(cls, records: list[Row], n: int) -> list[tuple[str, str]]:
        """The highest, median and lowest predicted risk."""
        ranked = sorted(records, key=lambda r: float(r["risk"]), reverse=True)
        chosen: list[tuple[str, str]] = []
        for i, what in ((0, "highest"), (len(ranked) // 2, "median"), (len(ranked) - 1, "lowest")):
            r = ranked[i]
            event = "event" if int(float(r["event"])) else "censored"
            if all(str(r["slide_id"]) != s for s, _ in chosen):
                chosen.append((str(r["slide_id"]),
                               f"{what} predicted risk ({float(r['risk']):.3g}); time {r['time']}, {event}"))
        return chosen[:n]
