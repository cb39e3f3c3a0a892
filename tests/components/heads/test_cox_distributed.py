"""The Cox head's partial likelihood spans the global batch under torch.distributed (2 gloo ranks)."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from milkit.aggregator import AggregatorOutput
from milkit.components.heads.cox import CoxSurvival


def make_head() -> CoxSurvival:
    torch.manual_seed(0)
    return CoxSurvival(CoxSurvival.Config(), in_dim=6, target_state={})


def batch():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(10, 6, generator=g)
    time = torch.tensor([5.0, 3, 3, 8, 1, 9, 3, 2, 7, 4])  # ties at t = 3
    event = torch.tensor([1.0, 1, 0, 1, 0, 1, 1, 0, 1, 1])
    return emb, time, event


def _rank(rank: int, world: int, init: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    head = make_head().train()
    emb, time, event = batch()
    sl = slice(rank, None, world)
    targets = {"time": time[sl], "event": event[sl], "sample_weight": torch.ones(len(time[sl]))}
    loss = head.loss(head(AggregatorOutput(embedding=emb[sl])), targets)
    loss.backward()
    grad = head.risk[-1].weight.grad.clone()
    dist.all_reduce(grad)
    out[rank] = (loss.item(), (grad / world).tolist())  # DistributedDataParallel averages gradients
    dist.destroy_process_group()


def test_two_rank_loss_equals_single_process_loss(tmp_path):
    head = make_head().train()
    emb, time, event = batch()
    loss = head.loss(head(AggregatorOutput(embedding=emb)), {"time": time, "event": event})
    loss.backward()
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, start_method="spawn")
    for rank in range(2):
        rank_loss, rank_grad = out[rank]
        assert abs(rank_loss - loss.item()) < 1e-6  # every rank sees the global-batch likelihood
        assert torch.allclose(torch.tensor(rank_grad), head.risk[-1].weight.grad, atol=1e-6)
