"""resnet50-trunc: torchvision key layout, loading with layer4/fc ignored, clear key errors."""

import hashlib
from pathlib import Path

import pytest
import torch

from milkit.errors import CheckpointError
from milkit.components.extractors.resnet import ResNet50Trunc, ResNetTruncConfig

SMALL = {"input_px": 32, "base_width": 8, "blocks": (1, 2, 1)}


def torchvision_resnet50_keys() -> set[str]:
    """Every key of torchvision.models.resnet50().state_dict(), written out from its structure."""
    def bn(p: str) -> list[str]:
        return [f"{p}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    keys = ["conv1.weight", *bn("bn1"), "fc.weight", "fc.bias"]
    for layer, n in enumerate((3, 4, 6, 3), start=1):
        for b in range(n):
            p = f"layer{layer}.{b}"
            keys += [f"{p}.conv{i}.weight" for i in (1, 2, 3)] + bn(f"{p}.bn1") + bn(f"{p}.bn2") + bn(f"{p}.bn3")
        keys += [f"layer{layer}.0.downsample.0.weight", *bn(f"layer{layer}.0.downsample.1")]
    return set(keys)


def test_full_size_keys_are_torchvision_minus_layer4_and_fc() -> None:
    with torch.device("meta"):
        model = ResNet50Trunc(ResNetTruncConfig())
    ours, tv = set(model.state_dict()), torchvision_resnet50_keys()
    assert ours <= tv and {k.split(".")[0] for k in tv - ours} == {"layer4", "fc"}
    assert model.feature_dim == 1024
    assert model.state_dict()["layer3.0.conv2.weight"].shape == (256, 256, 3, 3)


def test_loads_torchvision_style_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = ResNet50Trunc(ResNetTruncConfig(**SMALL)).eval()
    for m in src.modules():                                     # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    state["module.layer4.0.conv1.weight"] = torch.zeros(1)
    state["module.fc.weight"] = torch.zeros(3, 3)
    path = tmp_path / "r50.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = ResNet50Trunc(ResNetTruncConfig(**SMALL, weights=path)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))
    assert model.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.feature_dim == 8 * 4 * 4


def test_key_problems_are_listed(tmp_path: Path) -> None:
    state = ResNet50Trunc(ResNetTruncConfig(**SMALL)).state_dict()
    state.pop("layer2.1.bn2.running_var")
    state["layer3.0.extra.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        ResNet50Trunc(ResNetTruncConfig(**SMALL, weights=tmp_path / "bad.pt"))
    msg = str(err.value)
    assert "missing keys: layer2.1.bn2.running_var" in msg and "unexpected keys: layer3.0.extra.weight" in msg
    assert "conv1.weight: file (8, 3, 3, 3) vs model (8, 3, 7, 7)" in msg
