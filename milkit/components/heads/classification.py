"""Slide classification (cancer subtyping): cross-entropy head with scikit-learn metrics."""

from typing import TYPE_CHECKING, Any

import numpy as np
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


class ClassificationConfig(ComponentConfig):
    label_column: str = Field("label", description="Cohort column holding the class of each slide.")
    class_weights: str | list[float] | None = Field(
        None, description="None, 'balanced' (inverse training frequency) or one weight per class (sorted order)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the linear classifier.")
    n_boot: int = Field(1000, ge=0, description="Bootstrap resamples for the metrics' 95 % CIs (0 = none).")


class Classification(Head):
    """Linear classifier on the slide embedding; classes are learnt from the training split.

    Metrics (scikit-learn): balanced accuracy, accuracy, macro one-vs-rest AUC, macro F1
    and the confusion matrix (rows = truth, columns = prediction, class order as
    ``classes``).
    """

    name = "classification"
    Config = ClassificationConfig
    monitor = "balanced_accuracy"
    monitor_mode = "max"

    def __init__(self, config: ClassificationConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        self.classes: list[str] = list(target_state["classes"])
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(in_dim, len(self.classes)))
        weights = target_state.get("class_weights")
        self.register_buffer("class_weights", torch.tensor(weights, dtype=torch.float32) if weights else None)

    @classmethod
    def required_columns(cls, config: ClassificationConfig) -> tuple[str, ...]:
        return (config.label_column,)

    @classmethod
    def stratify_column(cls, config: ClassificationConfig) -> str | None:
        return config.label_column

    @classmethod
    def fit_targets(cls, config: ClassificationConfig, train_rows: list[Row]) -> dict[str, Any]:
        labels = [str(r[config.label_column]) for r in train_rows]
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise DataError(f"the training split has {len(labels)} slide(s) and only one class "
                            f"({', '.join(map(repr, classes)) or 'none'}) in column '{config.label_column}': a classifier "
                            "needs at least two; check the label column, or add slides of the other classes")
        weights: list[float] | None = None
        if config.class_weights == "balanced":
            counts = np.array([labels.count(c) for c in classes], dtype=float)
            weights = (len(labels) / (len(classes) * counts)).tolist()
        elif isinstance(config.class_weights, list):
            if len(config.class_weights) != len(classes):
                raise ValueError(
                    f"class_weights has {len(config.class_weights)} values but the training split has "
                    f"{len(classes)} classes {classes}"
                )
            weights = list(config.class_weights)
        return {"classes": classes, "class_weights": weights}

    @classmethod
    def check_rows(cls, config: ClassificationConfig, rows: list[Row]) -> list[str]:
        col = config.label_column
        bad = [r.get("slide_id", "?") for r in rows if r.get(col) in (None, "") or r.get(col) != r.get(col)]
        return [f"column '{col}' is empty for slide(s) {', '.join(map(str, bad[:5]))}"] if bad else []

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        col = self.config.label_column
        idx = [self.index.get(str(r[col]), -100) for r in rows]  # unseen class: ignored by the loss
        return {"label": torch.tensor(idx, dtype=torch.long)}

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        return HeadOutput({"logits": self.classifier(x.embedding)})  # b c

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        logits = out.values["logits"].float()
        return F.cross_entropy(logits, targets["label"], weight=self.class_weights, ignore_index=-100)

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        probs = torch.softmax(self.forward(x).values["logits"].float(), dim=-1).cpu().numpy()
        col = self.config.label_column
        records = []
        for row, p in zip(rows, probs):
            rec: Row = {"slide_id": row["slide_id"], "target": str(row[col]), "pred": self.classes[int(p.argmax())]}
            rec.update({f"prob_{c}": float(v) for c, v in zip(self.classes, p)})
            records.append(rec)
        return records

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        from milkit.metrics.bootstrap import classification_ci
        from milkit.metrics.classification import classification_metrics

        out = classification_metrics(records, self.classes)
        if self.config.n_boot and records:  # <metric>_ci95: [low, high], stratified bootstrap
            out.update(classification_ci(records, self.classes, n_boot=self.config.n_boot))
        return out

    @classmethod
    def plots(cls, run: "RunView", sink: "PlotSink") -> None:
        """ROC curves and the confusion matrix of the evaluation split."""
        from milkit.viz.task_plots import draw_classification_plots

        draw_classification_plots(run, sink)

    @classmethod
    def heatmap_slides(cls, records: list[Row], n: int) -> list[tuple[str, str]]:
        """The most confident slide of each predicted class, then the next most confident."""
        def conf(r: Row) -> float:
            return float(r[f"prob_{r['pred']}"])

        ranked = sorted(records, key=conf, reverse=True)
        firsts: dict[str, Row] = {}
        for r in ranked:
            firsts.setdefault(str(r["pred"]), r)
        order = list(firsts.values()) + [r for r in ranked if all(r is not f for f in firsts.values())]
        return [(str(r["slide_id"]), f"true {r['target']}, predicted {r['pred']} (p = {conf(r):.2f})")
                for r in order][:n]
