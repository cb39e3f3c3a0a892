"""Registers milkit's built-in extractors (patch encoders)."""

from milkit.extractor import Extractor
from milkit.hookspecs import hookimpl


@hookimpl
def milkit_register_extractors() -> list[type[Extractor]]:
    from milkit.components.extractors.color_texture import ColorTexture
    from milkit.components.extractors.conch import ConchV1, ConchV15
    from milkit.components.extractors.dinov2 import DINOv2ViTL14
    from milkit.components.extractors.plip import PLIP
    from milkit.components.extractors.presets import PRESET_CLASSES
    from milkit.components.extractors.resnet import ResNet50Trunc
    from milkit.components.extractors.swin import CTransPath
    from milkit.components.extractors.vit import ViT

    return [ColorTexture, ResNet50Trunc, DINOv2ViTL14, ViT, CTransPath, ConchV1, ConchV15, PLIP, *PRESET_CLASSES]
