"""Several classification targets at once (STAMP's multi-target): one linear classifier per label
column on a shared slide embedding; a missing label leaves only that target's loss."""

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput
from milkit.config import ComponentConfig
from milkit.errors import DataError
from milkit.head import Head, HeadOutput, Row

if TYPE_CHECKING:
    from milkit.viz.rundata import RunView
    from milkit.viz.sink import PlotSink

IGNORE = -100
"""Target index of a missing (or unseen) label: masked out of that target's loss."""
MEAN_METRICS = ("balanced_accuracy", "accuracy", "auc_macro", "f1_macro")
"""Per-target metrics that are also reported as their mean over the targets (unprefixed)."""


class MultiTargetConfig(ComponentConfig):
    label_columns: list[str] = Field(
        ["label"], min_length=1, description="Cohort columns, one class label each; an empty cell is a missing label.")
    target_weights: list[float] | None = Field(
        None, description="Weight of each target's cross-entropy in the summed loss (label_columns order); "
                          "default 1 each.")
    class_weights: Literal["balanced"] | None = Field(
        None, description="None, or 'balanced': each target's classes weighted by inverse training frequency.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the linear classifiers.")
    n_boot: int = Field(1000, ge=0, description="Bootstrap resamples for each target's 95 % CIs (0 = none).")

    @field_validator("label_columns")
    @classmethod
    def _distinct(cls, columns: list[str]) -> list[str]:
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"label_columns names {', '.join(map(repr, repeated))} more than once; "
                             "list each column once")
        return columns

    @model_validator(mode="after")
    def _one_weight_per_target(self) -> "MultiTargetConfig":
        weights, columns = self.target_weights, self.label_columns
        if weights is None:
            return self
        if len(weights) != len(columns):
            raise ValueError(f"target_weights has {len(weights)} value(s) but label_columns names {len(columns)} "
                             f"column(s) ({', '.join(columns)}); give one weight per column, in that order")
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"target_weights must be >= 0 with at least one > 0, got {weights}")
        return self


def label_of(value: Any) -> str | None:
    """A cohort cell as a class label; None for a missing one (empty, None, NaN). Whole-number floats
    lose their ``.0`` (pandas reads an integer column with empty cells as floats)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)


class MultiTargetClassification(Head):
    """One linear classifier per label column on the shared slide embedding.

    Loss: the sum over targets of ``target_weights[t]`` times that target's cross-entropy,
    averaged over the slides of the batch that have a label for it; a slide with an empty cell
    still trains the other targets. Metrics per target (``<column>/balanced_accuracy``, ...,
    as the ``classification`` head, on the slides with a label) and their mean over the targets
    (``balanced_accuracy``, monitored). See docs/multitarget.md.
    """

    name = "multitarget"
    Config = MultiTargetConfig
    target_columns = ("label",)
    monitor = "balanced_accuracy"
    monitor_mode = "max"

    def __init__(self, config: MultiTargetConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        self.columns: list[str] = list(config.label_columns)
        self.classes: dict[str, list[str]] = {c: list(target_state["classes"][c]) for c in self.columns}
        self.index = {c: {k: i for i, k in enumerate(self.classes[c])} for c in self.columns}
        self.dropout = nn.Dropout(config.dropout)
        self.classifiers = nn.ModuleList(nn.Linear(in_dim, len(self.classes[c])) for c in self.columns)
        weights = config.target_weights or [1.0] * len(self.columns)
        self.target_weights = list(map(float, weights))
        for i, c in enumerate(self.columns):
            w = (target_state.get("class_weights") or {}).get(c)
            self.register_buffer(f"class_weights_{i}", torch.tensor(w, dtype=torch.float32) if w else None)

    @classmethod
    def required_columns(cls, config: MultiTargetConfig) -> tuple[str, ...]:
        return tuple(config.label_columns)

    @classmethod
    def stratify_column(cls, config: MultiTargetConfig) -> str | None:
        """The first label column (missing labels form their own stratum)."""
        return config.label_columns[0]

    @classmethod
    def check_rows(cls, config: MultiTargetConfig, rows: list[Row]) -> list[str]:
        problems = []
        for col in config.label_columns:
            if rows and all(label_of(r.get(col)) is None for r in rows):
                problems.append(f"column '{col}' is empty for all {len(rows)} slide(s): no label to learn; "
                                "fill it in or drop it from label_columns")
        return problems

    @classmethod
    def fit_targets(cls, config: MultiTargetConfig, train_rows: list[Row]) -> dict[str, Any]:
        classes: dict[str, list[str]] = {}
        class_weights: dict[str, list[float] | None] = {}
        for col in config.label_columns:
            labels = [lab for r in train_rows if (lab := label_of(r.get(col))) is not None]
            found = sorted(set(labels))
            if len(found) < 2:
                raise DataError(f"the training split has {len(labels)} labelled slide(s) and only "
                                f"{len(found)} class(es) ({', '.join(map(repr, found)) or 'none'}) in column '{col}': "
                                "each target needs at least two; check the column, or drop it from label_columns")
            classes[col] = found
            class_weights[col] = None
            if config.class_weights == "balanced":
                counts = np.array([labels.count(c) for c in found], dtype=float)
                class_weights[col] = (len(labels) / (len(found) * counts)).tolist()
        missing = {col: sum(label_of(r.get(col)) is None for r in train_rows) for col in config.label_columns}
        return {"classes": classes, "class_weights": class_weights, "missing_in_train": missing}

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        out = {}
        for col in self.columns:  # missing or unseen in training: IGNORE
            idx = [self.index[col].get(label_of(r.get(col)) or "", IGNORE) for r in rows]
            out[col] = torch.tensor(idx, dtype=torch.long)                                    # b
        return out

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        h = self.dropout(x.embedding)                                                        # b e
        return HeadOutput({f"{c}/logits": clf(h) for c, clf in zip(self.columns, self.classifiers)})  # b c_t each

    def target_losses(self, out: HeadOutput, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each target's cross-entropy, averaged over the slides with a label (0 when none has one)."""
        losses = {}
        for i, col in enumerate(self.columns):
            logits, y = out.values[f"{col}/logits"].float(), targets[col]
            weight = getattr(self, f"class_weights_{i}")
            total = F.cross_entropy(logits, y, weight=weight, ignore_index=IGNORE, reduction="sum")
            known = y != IGNORE
            count = weight[y[known]].sum() if weight is not None else known.sum().to(total.dtype)
            losses[col] = total / count.clamp_min(1e-12)  # no label in the batch: 0 / eps = 0, still on the graph
        return losses

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        losses = self.target_losses(out, targets)
        return torch.stack([w * losses[c] for c, w in zip(self.columns, self.target_weights)]).sum()

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        values = self.forward(x).values
        records: list[Row] = [{"slide_id": r["slide_id"]} for r in rows]
        for col in self.columns:
            probs = torch.softmax(values[f"{col}/logits"].float(), dim=-1).cpu().numpy()   # b c_t
            for rec, row, p in zip(records, rows, probs):
                rec[f"{col}/target"] = label_of(row.get(col)) or ""
                rec[f"{col}/pred"] = self.classes[col][int(p.argmax())]
                rec.update({f"{col}/prob_{k}": float(v) for k, v in zip(self.classes[col], p)})
        return records

    def target_records(self, records: list[Row], col: str) -> list[Row]:
        """The ``classification`` head's records of target ``col``, for the slides with a label."""
        prefix = f"{col}/"
        return [{"slide_id": r["slide_id"], **{k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}}
                for r in records if str(r.get(f"{col}/target", "")) != ""]

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        return self._metrics(records, n_boot=self.config.n_boot)

    def validation_metrics(self, records: list[Row]) -> dict[str, Any]:
        """The point estimates only (no bootstrap) for the per-epoch validation pass."""
        return self._metrics(records, n_boot=0)

    def _metrics(self, records: list[Row], *, n_boot: int) -> dict[str, Any]:
        from milkit.metrics.bootstrap import classification_ci
        from milkit.metrics.classification import classification_metrics

        out: dict[str, Any] = {}
        per_target: dict[str, dict[str, Any]] = {}
        for col in self.columns:
            recs = [{**r, "target": str(r["target"]), "pred": str(r["pred"])}
                    for r in self.target_records(records, col)]
            m = classification_metrics(recs, self.classes[col]) if recs else {k: float("nan") for k in MEAN_METRICS}
            if n_boot and recs:
                m.update(classification_ci(recs, self.classes[col], n_boot=n_boot))
            m["n_labelled"] = len(recs)
            per_target[col] = m
        for name in MEAN_METRICS:  # the mean over targets (NaN targets skipped)
            values = [float(m[name]) for m in per_target.values() if not math.isnan(float(m[name]))]
            out[name] = float(np.mean(values)) if values else float("nan")
        for col, m in per_target.items():
            out.update({f"{col}/{k}": v for k, v in m.items()})
        return out

    @classmethod
    def plots(cls, run: "RunView", sink: "PlotSink") -> None:
        """ROC curves and the confusion matrix of each target on the evaluation split."""
        from milkit.viz.task_plots import draw_multitarget_plots

        draw_multitarget_plots(run, sink)

    @classmethod
    def heatmap_slides(cls, records: list[Row], n: int) -> list[tuple[str, str]]:
        """The most confident slide of each predicted class of the first target, then the next most confident."""
        if not records:
            return []
        col = next(k for k in records[0] if k.endswith("/pred"))[: -len("/pred")]

        def conf(r: Row) -> float:
            return float(r[f"{col}/prob_{r[f'{col}/pred']}"])

        ranked = sorted(records, key=conf, reverse=True)
        firsts: dict[str, Row] = {}
        for r in ranked:
            firsts.setdefault(str(r[f"{col}/pred"]), r)
        order = list(firsts.values()) + [r for r in ranked if all(r is not f for f in firsts.values())]
        return [(str(r["slide_id"]), f"{col}: true {r[f'{col}/target'] or '(missing)'}, predicted "
                                     f"{r[f'{col}/pred']} (p = {conf(r):.2f})") for r in order][:n]
