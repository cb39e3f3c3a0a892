"""The aggregator interface: a padded batch of bags -> slide representations."""

from dataclasses import dataclass
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
    """

    embedding: Tensor
    attention: Tensor | None = None
    tokens: Tensor | None = None
    token_mask: Tensor | None = None


class Aggregator(nn.Module):
    """Bag of patch features -> slide representation.

    Subclasses set ``name`` and ``Config``, take ``(config, *, in_dim)`` and set
    ``self.out_dim`` (E). ``forward(feats [B,N,D], mask [B,N] True=real patch,
    coords [B,N,2] level-0 px)`` returns an :class:`AggregatorOutput`. Padding
    (``mask == False``) must never change any output.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]]
    provides_tokens: ClassVar[bool] = False
    permutation_invariant: ClassVar[bool] = True
    out_dim: int

    def __init__(self, config: ComponentConfig, *, in_dim: int) -> None:
        super().__init__()
        self.config = config
        self.in_dim = in_dim

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        raise NotImplementedError
