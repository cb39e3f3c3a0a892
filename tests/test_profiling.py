"""The CPU memory meter: peak of live tensors created inside a block, and the training-step estimate."""

import torch
from torch import nn

from milkit.profiling import PeakMemory, training_step_memory_mb

MIB = 2**20


def test_peak_counts_tensors_alive_at_once_and_frees() -> None:
    before = torch.empty(MIB, dtype=torch.uint8)                  # existed already: not counted
    with PeakMemory() as m:
        a = torch.empty(MIB, dtype=torch.uint8)
        b = torch.empty(2 * MIB, dtype=torch.uint8)
        del a
        c = torch.empty(MIB, dtype=torch.uint8)
        view = c[:10]                                              # a view adds no storage
        before.add_(1)                                             # in place on an old tensor: nothing new
    assert m.peak == 3 * MIB and m.live == 3 * MIB
    del b, c, view
    assert m.live == 0


def test_training_step_estimate_is_activations_plus_params_and_adam() -> None:
    torch.manual_seed(0)
    model = nn.Linear(512, 256)
    x = torch.randn(4096, 512)

    def step() -> torch.Tensor:
        loss = model(x).square().mean()
        loss.backward()
        return loss

    params = sum(p.numel() * 4 for p in model.parameters())
    total = training_step_memory_mb(model, step)
    activations = total - 3 * params / MIB
    out = 4096 * 256 * 4 / MIB                                     # the layer output must be counted
    assert out <= activations <= 6 * out
    model.weight.requires_grad_(False)
    model.bias.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    frozen = training_step_memory_mb(model, lambda: model(x).square().mean())
    assert frozen < total                                          # no grads, no Adam moments
