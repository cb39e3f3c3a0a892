"""torch.distributed helpers: milkit runs under ``torchrun`` with no launcher of its own.

``torchrun --nproc-per-node N -m milkit run RECIPE`` sets RANK / WORLD_SIZE / LOCAL_RANK; milkit
initialises the default process group from them (NCCL on GPUs, gloo on CPU). Without those
variables everything below is a no-op and milkit runs as a single process.
"""

import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def init_from_env() -> bool:
    """Initialise the process group when launched by torchrun; returns whether distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


_LOCAL = False


def active() -> bool:
    """True under torchrun with more than one process (and not inside :func:`local`)."""
    return not _LOCAL and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def local() -> Iterator[None]:
    """Inside this block each process trains on its own, as if alone (compare's job sharding)."""
    global _LOCAL
    previous, _LOCAL = _LOCAL, True
    try:
        yield
    finally:
        _LOCAL = previous


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def shard(items: Sequence[T], r: int | None = None, n: int | None = None) -> list[T]:
    """Rank ``r``'s share of ``items``: every n-th item from position r (round robin, keeps order)."""
    r = rank() if r is None else r
    n = world_size() if n is None else n
    return list(items[r::n])


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list when not distributed)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def unshard(parts: list[list[T]]) -> list[T]:
    """Inverse of :func:`shard`: interleave the ranks' lists back into the original order."""
    out: list[T] = []
    for i in range(max((len(p) for p in parts), default=0)):
        out.extend(p[i] for p in parts if i < len(p))
    return out


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n_r, ...] from every rank along dim 0, keeping autograd (sizes may differ)."""
    if not active():
        return x
    sizes = gather_objects(int(x.shape[0]))
    biggest = max(sizes)
    padded = torch.cat([x, x.new_zeros((biggest - x.shape[0], *x.shape[1:]))]) if x.shape[0] < biggest else x
    import warnings

    import torch.distributed.nn.functional as dist_nn

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd all_gather
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_nn.all_gather(padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])
