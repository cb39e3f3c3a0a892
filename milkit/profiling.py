"""Memory accounting that works on CPU as well as CUDA: the peak of live tensors inside a block."""

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """Track the bytes of every storage created by an op (forward and backward) until it is freed.

    ``peak`` is the largest total alive at once, in bytes, not counting tensors that existed
    before the block (inputs, parameters). Adds Python overhead per op: measure, do not time.

    Example:
        >>> with PeakMemory() as m:
        ...     model(x).sum().backward()
        >>> m.peak / 2**20  # MiB
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._alive: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        tensors_in = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        inputs = {t.untyped_storage().data_ptr() for t in tensors_in}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size and key not in self._alive and key not in inputs:   # in-place / out= ops: not new
                    self._alive.add(key)
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, size)
        return out

    def _free(self, key: int, size: int) -> None:
        self.live -= size
        self._alive.discard(key)


def training_step_memory_mb(model: nn.Module, step: Callable[[], Any]) -> float:
    """Peak memory of one training step, in MiB: tensors alive at once while ``step()`` runs forward,
    loss and backward (activations, gradients), plus the parameters and two Adam moments per
    trainable parameter. Independent of the allocator, so comparable across aggregators on CPU; on
    CUDA prefer ``torch.cuda.max_memory_allocated``.
    """
    with PeakMemory() as m:
        step()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return (m.peak + params + 2 * trainable) / 2**20
