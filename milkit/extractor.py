"""The extractor interface: a batch of RGB tiles -> patch features."""

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from milkit.config import ComponentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderCard:
    """What ``milkit encoders`` shows about a named encoder, taken from its authors' model card."""

    model: str
    """Model and paper, e.g. ``"UNI (Chen et al., Nat Med 2024): ViT-L/16, DINOv2"``."""
    params: int
    """Published parameter count (a test builds the model on the meta device and compares)."""
    output: str
    """What the feature is, e.g. ``"class token (1024)"`` or ``"class token + mean patch token (2560)"``."""
    input_px: int
    """Input side in pixels (tiles are resized to it)."""
    patch_px: int | None
    """ViT patch size (None for convolutional encoders)."""
    mpp: float | None
    """Resolution it was trained at, micrometres per pixel (the preset's default ``target_mpp``)."""
    licence: str
    """The weights' licence, e.g. ``"CC-BY-NC-ND 4.0 (non-commercial)"``."""
    weights: str
    """Where the authors publish the weights and which file the preset expects."""


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
    channels_last: ClassVar[bool] = False
    """Convolutional encoders: on CUDA, weights and inputs use the channels-last memory format (faster
    convolutions in bf16)."""
    card: ClassVar[EncoderCard | None] = None
    """The model card of a named pathology encoder (``milkit encoders``); None for generic ones."""

    def __init__(self, config: ComponentConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, tiles: Tensor) -> Tensor:
        raise NotImplementedError
