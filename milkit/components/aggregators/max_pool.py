"""Max pooling over the bag: each embedding dimension takes its strongest patch."""

from pydantic import Field
from torch import Tensor, nn

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.nn.masking import masked_max


class MaxPoolConfig(ComponentConfig):
    embed_dim: int = Field(256, gt=0, description="Width of the per-patch embedding before pooling.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after the embedding.")


class MaxPool(Aggregator):
    """Embeds each patch (Linear + ReLU) and takes the element-wise max over real patches."""

    name = "max"
    Config = MaxPoolConfig
    returns_attention = False

    def __init__(self, config: MaxPoolConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        self.out_dim = config.embed_dim
        self.embed = nn.Sequential(nn.Linear(in_dim, config.embed_dim), nn.ReLU(), nn.Dropout(config.dropout))

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = self.embed(feats)                                        # b n e
        return AggregatorOutput(embedding=masked_max(h, mask))       # b e
