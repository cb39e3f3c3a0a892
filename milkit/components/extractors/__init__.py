"""Registers milkit's built-in extractors (patch encoders)."""

from milkit.extractor import Extractor
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_extractors() -> list[type[Extractor]]:
    from milkit.components.extractors.color_texture import ColorTexture
    from milkit.components.extractors.dinov2 import DINOv2ViTL14
    from milkit.components.extractors.resnet import ResNet50Trunc
    from milkit.components.extractors.vit import ViT

    return [ColorTexture, ResNet50Trunc, DINOv2ViTL14, ViT]
