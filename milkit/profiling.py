"""Memory accounting for one training step that works on CPU as well as CUDA."""

import torch
from torch import nn


def training_step_memory_mb(model: nn.Module, step) -> float:
    """Estimated peak memory of one training step, in MiB.

    Counts the unique tensor storages autograd saves for backward while ``step()`` runs
    forward + loss (the activations), plus parameters, gradients and two Adam moments.
    On CUDA prefer ``torch.cuda.max_memory_allocated``; this estimate is what CPU runs
    report, comparable across aggregators because it does not depend on the allocator.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    del loss
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return (sum(seen.values()) + params + 3 * trainable) / 2**20
