"""color-texture: separates H&E-like tissue classes by colour and by texture; stable per tile."""

from pathlib import Path

import cv2
import numpy as np
import torch

from milkit.components.extractors.color_texture import ColorTexture, ColorTextureConfig

PX = 64


def tile(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One synthetic 64-px tile; stain intensity jitters from tile to tile."""
    jitter = rng.uniform(-12, 12, 3)
    base = {"stroma": (235, 160, 200), "tumour": (200, 140, 200), "fat": (245, 240, 244),
            "lymph": (225, 175, 210), "dab": (200, 165, 130)}[kind]
    img = np.clip(np.array(base) + jitter + rng.normal(0, 4, (PX, PX, 3)), 0, 255).astype(np.uint8)
    if kind == "stroma":                                                  # wavy pink fibres
        for _ in range(6):
            y = int(rng.integers(0, PX))
            cv2.line(img, (0, y), (PX, y + int(rng.integers(-8, 8))), (215, 120, 175), 1)
    if kind == "tumour":                                                  # large pale-purple nuclei
        for _ in range(12):
            cv2.circle(img, tuple(int(v) for v in rng.integers(0, PX, 2)), 6, (120, 70, 160), -1)
    if kind in ("lymph", "dab"):                                          # many small dark nuclei
        for _ in range(60):
            cv2.circle(img, tuple(int(v) for v in rng.integers(0, PX, 2)), 1, (70, 40, 120), -1)
    if kind == "fat":                                                     # thin membranes
        cv2.circle(img, (PX // 2, PX // 2), PX // 3, (225, 170, 205), 1)
    return img


def features(tiles: list[np.ndarray]) -> np.ndarray:
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return ColorTexture(ColorTextureConfig(input_px=PX))(x).numpy()


def test_separates_tissue_classes() -> None:
    rng = np.random.default_rng(0)
    kinds = ["stroma", "tumour", "fat", "lymph", "dab"]
    feats = {k: features([tile(k, rng) for _ in range(16)]) for k in kinds}
    allf = np.concatenate(list(feats.values()))
    mu, sd = allf.mean(0), allf.std(0) + 1e-6
    z = {k: (v - mu) / sd for k, v in feats.items()}
    train = {k: v[:8].mean(0) for k, v in z.items()}
    correct = sum(min(train, key=lambda c: np.linalg.norm(f - train[c])) == k for k, v in z.items() for f in v[8:])
    assert correct == 8 * len(kinds)                                      # nearest centroid, held-out tiles
    within = np.mean([np.linalg.norm(v - v.mean(0), axis=1).mean() for v in z.values()])
    between = min(np.linalg.norm(train[a] - train[b]) for a in kinds for b in kinds if a < b)
    assert between > 1.5 * within  # class centroids well apart relative to the spread within a class


def test_texture_alone_separates_same_colour_tiles() -> None:
    rng = np.random.default_rng(1)
    smooth = [np.full((PX, PX, 3), (220, 150, 200), np.uint8) + rng.integers(0, 3, (PX, PX, 3), dtype=np.uint8)
              for _ in range(8)]
    grainy = [np.clip(np.full((PX, PX, 3), (220, 150, 200)) + rng.normal(0, 25, (PX, PX, 1)), 0, 255).astype(np.uint8)
              for _ in range(8)]
    a, b = features(smooth), features(grainy)
    colour, texture = slice(0, 3), slice(62, 96)                          # RGB means; texture block
    assert np.abs(a[:, colour].mean(0) - b[:, colour].mean(0)).max() < 0.02
    assert np.linalg.norm(a[:, texture].mean(0) - b[:, texture].mean(0)) > 10 * a[:, texture].std(0).mean()


def test_flip_invariant_and_batch_independent() -> None:
    rng = np.random.default_rng(2)
    tiles = [tile("tumour", rng) for _ in range(4)]
    f = features(tiles)
    np.testing.assert_allclose(features([t[:, ::-1].copy() for t in tiles]), f, atol=1 / 256)  # a bin-edge pixel
    np.testing.assert_allclose(features(tiles[:1]), f[:1], atol=1e-6)
    assert f.shape == (4, 96) and np.isfinite(f).all()


def test_tissue_and_glass_differ_on_a_real_slide(shared_data: Path) -> None:
    from milkit.slides import open_slide

    with open_slide(shared_data / "wsi" / "cmu-1-small-region.svs") as r:
        glass = [cv2.resize(r.read_region(x, 0, 0, 128, 128), (PX, PX), interpolation=cv2.INTER_AREA)
                 for x in (1600, 1800, 2000)]
        tissue = [cv2.resize(r.read_region(x, y, 0, 128, 128), (PX, PX), interpolation=cv2.INTER_AREA)
                  for x, y in ((800, 1400), (700, 1800), (900, 1100))]
    g, t = features(glass), features(tissue)
    assert np.linalg.norm(g.mean(0) - t.mean(0)) > 3 * max(np.linalg.norm(g - g.mean(0), axis=1).max(), 1e-3)
