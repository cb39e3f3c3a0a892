"""Mean pooling over the bag: the simplest MIL baseline."""

from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.nn.masking import masked_mean


class MeanPoolConfig(ComponentConfig):
    embed_dim: int = Field(256, gt=0, description="Width of the per-patch embedding before pooling.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after the embedding.")


class MeanPool(Aggregator):
    """Embeds each patch (Linear + ReLU) and averages the real patches of each bag."""

    name = "mean"
    Config = MeanPoolConfig
    returns_attention = False

    def __init__(self, config: MeanPoolConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        self.out_dim = config.embed_dim
        self.embed = nn.Sequential(nn.Linear(in_dim, config.embed_dim), nn.ReLU(), nn.Dropout(config.dropout))

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = self.embed(feats)                                        # b n e
        return AggregatorOutput(embedding=masked_mean(h, mask))      # b e
