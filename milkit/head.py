"""The head interface: slide representation -> task output, loss, predictions, metrics."""

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig

Row = dict[str, Any]
"""One cohort-table row (``slide_id``, ``case_id`` and task columns)."""


@dataclass
class HeadOutput:
    """A head's forward output: ``values`` holds named tensors (logits, risk, log-probs...)."""

    values: dict[str, Tensor] = field(default_factory=dict)


class Head(nn.Module):
    """Task head: consumes an :class:`AggregatorOutput`, owns the loss and the metrics.

    Life cycle, driven by the trainer:

    1. ``fit_targets(config, train_rows)`` (classmethod) learns what the task needs from
       the training split only (class list, tokenizer vocabulary...) and returns a
       JSON-serialisable state saved with the run.
    2. ``Head(config, in_dim=E, target_state=state)`` builds the module.
    3. ``collate_targets(rows)`` turns a batch of rows into target tensors.
    4. ``forward(x, targets)`` -> :class:`HeadOutput`; ``loss(out, targets)`` -> scalar.
    5. ``predict(x, rows)`` -> one JSON-able record per slide (written to predictions.csv).
    6. ``metrics(records, train_records=...)`` -> ``{name: value}``.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]]
    requires_tokens: ClassVar[bool] = False
    target_columns: ClassVar[tuple[str, ...]] = ()
    monitor: ClassVar[str] = "loss"  # default validation metric for model selection
    monitor_mode: ClassVar[str] = "min"

    def __init__(self, config: ComponentConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.in_dim = in_dim
        self.target_state = target_state

    def bind(self, aggregator: "Aggregator") -> None:
        """Called once after both are built; lets a head share modules with its aggregator.

        HistGen's report head uses it to share the cross-modal memory of the ``histgen``
        aggregator. The default does nothing.
        """

    def validation(self) -> AbstractContextManager[None]:
        """Context for the per-epoch validation pass used for model selection.

        A head may make that pass cheaper than the final evaluation (the report head decodes
        greedily and skips METEOR there). The default changes nothing.
        """
        return nullcontext()

    @classmethod
    def fit_targets(cls, config: ComponentConfig, train_rows: list[Row]) -> dict[str, Any]:
        """Learn the task's target encoding from the training rows (default: nothing)."""
        return {}

    @classmethod
    def check_rows(cls, config: ComponentConfig, rows: list[Row]) -> list[str]:
        """Return problems with the cohort's target values (one message each); [] if fine."""
        return []

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        raise NotImplementedError

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        raise NotImplementedError

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        raise NotImplementedError
