"""Peak memory of the tensors torch allocates inside a block, on any device (CPU included)."""

import weakref
from typing import Any

import torch
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
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size and key not in self._alive:
                    self._alive.add(key)
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, size)
        return out

    def _free(self, key: int, size: int) -> None:
        self.live -= size
        self._alive.discard(key)
