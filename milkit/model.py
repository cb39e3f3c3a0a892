"""MILModel: an aggregator and a head wired together (the unit that is trained and checkpointed)."""

from dataclasses import dataclass

from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.head import Head, HeadOutput


@dataclass
class Bags:
    """A padded batch of B bags: feats [B,N,D], mask [B,N] (True = real patch), coords [B,N,2]."""

    feats: Tensor
    mask: Tensor
    coords: Tensor

    def to(self, device: object) -> "Bags":
        return Bags(self.feats.to(device), self.mask.to(device), self.coords.to(device))


class MILModel(nn.Module):
    """``head(aggregator(bags))``. State-dict keys start with ``aggregator.`` or ``head.``."""

    def __init__(self, aggregator: Aggregator, head: Head) -> None:
        super().__init__()
        self.aggregator = aggregator
        self.head = head
        head.bind(aggregator)

    def check_width(self, width: int, source: object) -> None:
        """Refuse features of another width than the model was built for, naming ``source``."""
        if width != self.aggregator.in_dim:
            from milkit.errors import DataError

            raise DataError(f"{source}: features are {width} wide but this model was trained on "
                            f"{self.aggregator.in_dim}-wide features (another extractor?); use features made with "
                            "the extractor of the run's recipe")

    def encode(self, bags: Bags) -> AggregatorOutput:
        return self.aggregator(bags.feats, bags.mask, bags.coords)

    def forward(self, bags: Bags, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        """The head's output; with ``targets``, ``aux_losses`` holds the aggregator's auxiliary terms."""
        x = self.encode(bags)
        out = self.head(x, targets)
        if targets is not None:
            out.aux_losses = self.aggregator.auxiliary_losses(x, targets)
        return out

    def training_loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        """The head's loss plus every auxiliary term of ``out``."""
        loss = self.head.loss(out, targets)
        for term in out.aux_losses.values():
            loss = loss + term
        return loss
