"""A thread-safe least-recently-used cache bounded by the bytes of what it holds (tiles, overlays)."""

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


def default_size(value: object) -> int:
    """Bytes of ``bytes`` / numpy arrays (``nbytes``); 1 for anything else."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    nbytes = getattr(value, "nbytes", None)
    return int(nbytes) if isinstance(nbytes, int) else 1


class ByteLRU(Generic[V]):
    """At most ``max_bytes`` of values, the least recently used dropped first.

    A value larger than the whole budget is returned but not kept. Two threads asking for the same
    missing key may both compute it (the second result is kept); that costs time, never memory
    beyond the bound.

    Args:
        max_bytes: the budget.
        size: bytes of one value (default: :func:`default_size`).
    """

    def __init__(self, max_bytes: int, size: Callable[[V], int] = default_size) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._size = size
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V) -> V:
        n = self._size(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if n <= self.max_bytes:
                self._items[key] = (value, n)
                self.bytes += n
                while self.bytes > self.max_bytes:
                    self.bytes -= self._items.popitem(last=False)[1][1]
        return value

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value of ``key``, else ``compute()`` (kept for next time)."""
        value = self.get(key)
        return value if value is not None else self.put(key, compute())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0
