"""ResNet-50 truncated after layer3 + global average pool (CLAM's ``resnet50_trunc``, 1024-d)."""

from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from milkit.config import ComponentConfig
from milkit.extractor import IMAGENET_MEAN, IMAGENET_STD, Extractor
from milkit.state_dict import load_checked, read_state_dict, sha256_file, strip_prefix


class ResNetTruncConfig(ComponentConfig):
    weights: Path | None = Field(
        None, description="torchvision/timm ResNet-50 state dict (e.g. resnet50-11ad3fa6.pth); None = random init.")
    input_px: int = Field(224, ge=32, description="Input side in pixels (CLAM: 224).")
    base_width: int = Field(64, ge=4, description="Stem width (64 for ResNet-50; smaller only for tests).")
    blocks: tuple[int, int, int] = Field((3, 4, 6), description="Bottlenecks in layer1-3 (ResNet-50: 3, 4, 6).")


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv, v1.5), same parameter names."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50Trunc(Extractor):
    """ResNet-50 (He et al., 2016, arXiv:1512.03385) up to layer3, then adaptive average pooling:
    1024-d, as CLAM's default encoder. Loads torchvision-format keys (``conv1.weight``,
    ``layer1.0.conv1.weight``, ``bn1.running_mean``, ...); ``layer4.*`` and ``fc.*`` are ignored."""

    name: ClassVar[str] = "resnet50-trunc"
    Config = ResNetTruncConfig
    channels_last = True

    def __init__(self, config: ResNetTruncConfig) -> None:
        super().__init__(config)
        w = config.base_width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, layers = w, []
        for i, n in enumerate(config.blocks):
            width = w * 2**i
            layer = []
            for j in range(n):
                layer.append(Bottleneck(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width * 4
            layers.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self.tile_size_px = config.input_px
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        if config.weights is not None:
            state = strip_prefix(read_state_dict(config.weights), ("module.", "model.", "backbone."))
            load_checked(self, state, source=str(config.weights), ignore=("layer4.", "fc."))
            self.weights_sha256 = sha256_file(config.weights)

    def forward(self, tiles: Tensor) -> Tensor:
        m = torch.tensor(self.mean, device=tiles.device, dtype=tiles.dtype).view(1, 3, 1, 1)
        s = torch.tensor(self.std, device=tiles.device, dtype=tiles.dtype).view(1, 3, 1, 1)
        x = self.maxpool(self.relu(self.bn1(self.conv1((tiles - m) / s))))   # b w h/4 w/4
        x = self.layer3(self.layer2(self.layer1(x)))                          # b 1024 h/16 w/16
        return self.pool(x).flatten(1)                                        # b 1024
