"""Built-in patch encoders: color-texture (weight-free), resnet50-trunc, dinov2-vitl14, vit (timm layout)."""
