"""The aggregator interface: a padded batch of bags -> slide representations."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from torch import Tensor, nn

from milkit.config import ComponentConfig


@dataclass
class AggregatorOutput:
    """What an aggregator returns for a batch of B bags of up to N patches.

    Attributes:
        embedding: slide embedding, [B, E].
        attention: per-patch scores, [B, N], 0 at padded patches (for heatmaps); None if
            the component has no per-patch score.
        tokens: slide token sequence, [B, T, E], for heads that attend over the slide
            (report generation); None if the component provides none.
        token_mask: [B, T], True at real tokens; None when ``tokens`` is None.
        aux: intermediate tensors the aggregator's own :meth:`Aggregator.auxiliary_losses`
            needs (instance logits, pseudo-bag predictions...); core never reads them.
    """

    embedding: Tensor
    attention: Tensor | None = None
    tokens: Tensor | None = None
    token_mask: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureSpec:
    """The patch features a pretrained slide encoder was trained on; bags of other features are refused
    before training, with the extractor to use instead."""

    encoders: tuple[str, ...]
    """milkit extractor names whose features fit (the feature file's ``extractor`` attribute)."""
    dim: int
    """Width of those features."""


class Aggregator(nn.Module):
    """Bag of patch features -> slide representation.

    Subclasses set ``name`` and ``Config``, take ``(config, *, in_dim)`` and set
    ``self.out_dim`` (E). ``forward(feats [B,N,D], mask [B,N] True=real patch,
    coords [B,N,2] level-0 px)`` returns an :class:`AggregatorOutput`. Padding
    (``mask == False``) must never change any output.

    Everything core reads from an aggregator is declared here, with its default.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]]
    provides_tokens: ClassVar[bool] = False
    """True if ``forward`` fills ``tokens``/``token_mask`` (needed by heads with ``requires_tokens``)."""
    returns_attention: ClassVar[bool | None] = None
    """Whether ``forward`` fills ``attention`` (per-patch scores for heatmaps). None = not declared: milkit
    then probes the default config on a toy bag when it must know. The conformance kit checks a declared value."""
    permutation_invariant: ClassVar[bool] = True
    """Reordering a bag's patches leaves the outputs unchanged (checked by the conformance kit)."""
    config: ComponentConfig
    """The validated ``[aggregator]`` table."""
    in_dim: int
    """D, the width of the patch features it was built for."""
    out_dim: int
    """E, the width of ``embedding`` (and of ``tokens``); set in ``__init__``."""
    expected_features: ClassVar[FeatureSpec | None] = None
    """Slide foundation encoders: the patch features their published weights expect (checked against
    every feature file's ``extractor`` and width before training); None = any features."""
    weights_sha256: str | None = None
    """sha256 of the weights file loaded in ``__init__`` (slide foundation encoders), else None."""

    def __init__(self, config: ComponentConfig, *, in_dim: int) -> None:
        super().__init__()
        self.config = config
        self.in_dim = in_dim

    @classmethod
    def pretrained_weights(cls, config: ComponentConfig) -> Path | None:
        """The published weights file ``config`` loads (slide foundation encoders' ``weights`` key),
        None when the aggregator starts from random weights; ``[aggregator] freeze = true`` needs one
        (or ``init``)."""
        return None

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        raise NotImplementedError

    def auxiliary_losses(self, out: AggregatorOutput, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named, already weighted auxiliary loss terms of a training batch (default: none).

        Called in training with this batch's output and the head's targets; the trainer adds
        the terms to the head's loss and logs each as ``train_aux_<name>`` in metrics.jsonl.
        Instance-level losses (CLAM's clustering, DSMIL's max-instance, DTFD's tier-1) go here,
        their weights as keys of the aggregator's ``Config``.
        """
        return {}
