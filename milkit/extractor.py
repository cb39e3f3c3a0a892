"""The extractor interface: a batch of RGB tiles -> patch features."""

from typing import ClassVar

from torch import Tensor, nn

from milkit.config import ComponentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Extractor(nn.Module):
    """Patch encoder: ``forward(tiles [B,3,H,W] float in [0,1], RGB) -> features [B, D]``.

    Subclasses set ``name`` and ``Config`` and, in ``__init__``, ``self.feature_dim``
    (D), ``self.tile_size_px`` (the H = W the encoder expects; the pipeline resizes
    tiles to it) and ``self.mean`` / ``self.std`` (the normalisation ``forward``
    applies). Weights come from a local file named in the config, never a download;
    ``weights_sha256`` identifies them (None for weight-free encoders).
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]]
    feature_dim: int
    tile_size_px: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_sha256: str | None = None

    def __init__(self, config: ComponentConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, tiles: Tensor) -> Tensor:
        raise NotImplementedError
