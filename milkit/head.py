"""The head interface: slide representation -> task output, loss, predictions, metrics, plots."""

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig

if TYPE_CHECKING:
    from milkit.viz.rundata import RunView
    from milkit.viz.sink import PlotSink

Row = dict[str, Any]
"""One cohort-table row (``slide_id``, ``case_id`` and task columns)."""

SAMPLE_WEIGHT = "sample_weight"
"""Target key the trainer adds for heads with ``loss_is_global`` under torchrun (see there)."""


@dataclass
class HeadOutput:
    """A head's forward output.

    Attributes:
        values: named tensors (logits, risk, log-probs...).
        aux_losses: the aggregator's auxiliary loss terms for this batch (see
            :meth:`milkit.Aggregator.auxiliary_losses`), filled by :class:`milkit.model.MILModel`;
            the trainer adds them to :meth:`Head.loss` and logs each term.
    """

    values: dict[str, Tensor] = field(default_factory=dict)
    aux_losses: dict[str, Tensor] = field(default_factory=dict)


class Head(nn.Module):
    """Task head: consumes an :class:`AggregatorOutput`, owns the loss, the metrics and the plots.

    Life cycle, driven by the trainer:

    1. ``fit_targets(config, train_rows)`` (classmethod) learns what the task needs from
       the training split only (class list, tokenizer vocabulary...) and returns a
       JSON-serialisable state saved with the run.
    2. ``Head(config, in_dim=E, target_state=state)`` builds the module.
    3. ``collate_targets(rows)`` turns a batch of rows into target tensors.
    4. ``forward(x, targets)`` -> :class:`HeadOutput`; ``loss(out, targets)`` -> scalar.
    5. ``predict(x, rows)`` -> one JSON-able record per slide (written to predictions.csv);
       before validation and at the end of training, ``index_train_split(batches)`` may look at
       the whole training split (a retrieval head's index).
    6. ``metrics(records, train_records=...)`` -> ``{name: value}``.
    7. ``plots(run, sink)`` (classmethod) draws the task's plots of the finished run.

    Everything core reads from a head is declared here, with its default; a meta-test
    (``tests/test_contracts_declared.py``) fails when core reads anything else.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]]
    requires_tokens: ClassVar[bool] = False
    """True if ``forward`` needs ``AggregatorOutput.tokens`` (report generation)."""
    target_columns: ClassVar[tuple[str, ...]] = ()
    """Cohort columns the head reads with its default config (see :meth:`required_columns`)."""
    monitor: ClassVar[str] = "loss"
    """Default validation metric for model selection (a key of ``metrics()``, or ``loss``)."""
    monitor_mode: ClassVar[str] = "min"
    """``max`` or ``min``: whether a larger ``monitor`` is better."""
    loss_is_global: ClassVar[bool] = False
    """The loss compares the bags of a batch with each other (Cox partial likelihood), so it is
    not a mean of per-bag terms. The trainer then does not rescale it per rank under torchrun,
    and adds ``targets[SAMPLE_WEIGHT]`` ([b] floats, 0 for rows a rank only ran to join the
    all-reduce) which the loss must honour. Default: a mean of per-bag terms."""
    uses_train_records: ClassVar[bool] = False
    """``metrics()`` needs the training split's records (``train_records``), e.g. a Breslow
    baseline; the trainer then predicts the training split too."""
    text_output: ClassVar[str | None] = None
    """Record field holding generated text (report heads); ``milkit generate`` reads it. None: the
    head generates no text."""

    config: ComponentConfig
    """The validated ``[head]`` table."""
    in_dim: int
    """E, the aggregator's ``out_dim``."""
    target_state: dict[str, Any]
    """What ``fit_targets`` learnt from the training split (saved with the run)."""

    def __init__(self, config: ComponentConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.in_dim = in_dim
        self.target_state = target_state

    @classmethod
    def required_columns(cls, config: ComponentConfig) -> tuple[str, ...]:
        """Cohort-table columns this head reads with ``config`` (checked before any work)."""
        return cls.target_columns

    @classmethod
    def stratify_column(cls, config: ComponentConfig) -> str | None:
        """Column that ``[cohort] stratify = "auto"`` balances across splits (None: no stratification)."""
        return None

    @classmethod
    def strata(cls, config: ComponentConfig, rows: list[Row]) -> list[str] | None:
        """The stratum of each row that ``[cohort] stratify = "auto"`` balances across splits
        (None: no stratification). Default: the value of :meth:`stratify_column`; the
        regression head bins its continuous target into quantiles instead."""
        column = cls.stratify_column(config)
        return None if column is None else [str(r.get(column)) for r in rows]

    @classmethod
    def metric_mode(cls, metric: str) -> str:
        """``max`` or ``min``: whether a larger ``metric`` (a key of ``metrics()``) is better, for
        ``[train] monitor`` and ``[compare] metric`` without an explicit mode. Default:
        ``monitor_mode`` for ``monitor``, ``min`` for losses, else ``max``."""
        if metric == cls.monitor:
            return cls.monitor_mode
        return "min" if "loss" in metric else "max"

    @classmethod
    def check_rows(cls, config: ComponentConfig, rows: list[Row]) -> list[str]:
        """Return problems with the cohort's target values (one message each); [] if fine."""
        return []

    @classmethod
    def fit_targets(cls, config: ComponentConfig, train_rows: list[Row]) -> dict[str, Any]:
        """Learn the task's target encoding from the training rows (default: nothing)."""
        return {}

    def bind(self, aggregator: "Aggregator") -> None:
        """Called once after both are built; lets a head share modules with its aggregator.

        HistGen's report head uses it to share the cross-modal memory of the ``histgen``
        aggregator. The default does nothing.
        """

    def validation(self) -> AbstractContextManager[None]:
        """Context for the per-epoch validation pass's ``predict`` calls (model selection).

        A head may make that pass cheaper than the final evaluation (the report head decodes
        greedily there). The default changes nothing.
        """
        return nullcontext()

    def index_train_split(self, batches: Iterator[tuple[AggregatorOutput, list[Row]]]) -> None:
        """Look at the whole training split as the current weights encode it (retrieval heads' index).

        The trainer calls it after each epoch that validates and after the last epoch, before the
        validation pass and before the checkpoints are written, so a head may keep what it learns
        here in buffers that are saved with the weights. ``batches`` yields ``(x, rows)`` for every
        training slide, in split order, not subsampled, encoded in eval mode under ``no_grad``;
        under torchrun every rank gets all of them. It is lazy: the default ignores it, and then
        no pass over the training split runs.
        """

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        """Target tensors of a batch of rows (keys are the head's own)."""
        raise NotImplementedError

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        """Task output of a batch; ``targets`` is given in training (teacher forcing needs it)."""
        raise NotImplementedError

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        """Scalar task loss of a batch (the trainer adds ``out.aux_losses``)."""
        raise NotImplementedError

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        """One JSON-able record per row, starting with ``slide_id`` (predictions.csv)."""
        raise NotImplementedError

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        """Every metric of the final evaluation of one split's records."""
        raise NotImplementedError

    def validation_metrics(self, records: list[Row]) -> dict[str, Any]:
        """Metrics of the per-epoch validation pass; must include ``monitor``. Default:
        :meth:`metrics`. A head may return a cheaper subset (the report head skips METEOR)."""
        return self.metrics(records)

    @classmethod
    def plots(cls, run: "RunView", sink: "PlotSink") -> None:
        """Draw this task's plots of a finished run into ``sink`` (shown in report.html).

        ``run`` reads the run dir (metrics, predictions of the evaluation split, per-fold
        records). Core draws only task-independent plots (training curves, heatmaps).
        Default: none.
        """

    @classmethod
    def heatmap_slides(cls, records: list[Row], n: int) -> list[tuple[str, str]]:
        """``n`` telling evaluation slides for attention heatmaps: ``(slide_id, why)``.

        Default: evenly spaced by slide id. Classification picks the most confident slide of
        each class, Cox the risk extremes.
        """
        ranked = sorted(records, key=lambda r: str(r["slide_id"]))
        step = max(1, len(ranked) // max(n, 1))
        return [(str(r["slide_id"]), "sample slide") for r in ranked[::step]][:n]
