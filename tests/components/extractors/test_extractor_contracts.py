"""Every built-in encoder passes milkit.testing.check_extractor in a small configuration."""

import pytest

from milkit.components.extractors.color_texture import ColorTexture
from milkit.components.extractors.dinov2 import DINOv2ViTL14
from milkit.components.extractors.resnet import ResNet50Trunc
from milkit.components.extractors.vit import ViT
from milkit.testing.extractor import check_extractor

SMALL = {
    ColorTexture: {"input_px": 32},
    ResNet50Trunc: {"input_px": 32, "base_width": 8, "blocks": (1, 1, 1)},
    DINOv2ViTL14: {"img_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 4},
    ViT: {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2, "num_registers": 2,
          "mlp": "swiglu_packed", "pool": "cls+avg"},
}


@pytest.mark.parametrize("cls", list(SMALL), ids=lambda c: c.name)
def test_contract(cls) -> None:
    check_extractor(cls, SMALL[cls])


def test_all_builtins_are_registered(registries) -> None:
    assert {"color-texture", "resnet50-trunc", "dinov2-vitl14", "vit"} <= set(registries.extractors.names())
