"""Top-k memory attention: same numbers as HistGen's expand + gather, far less memory."""

import pytest
import torch
from _reference_histgen import memory_querying_responding

from milkit.histgen.cmn import CrossModalMemory, topk_memory_attention
from milkit.profiling import PeakMemory


def _qkv(b: int, h: int, q: int, m: int, dk: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, requires_grad=True) for s in ((b, h, q, dk), (b, h, m, dk), (b, h, m, dk))]


@pytest.mark.parametrize("topk", [1, 5, 32, 64])
def test_topk_attention_equals_reference_values_and_gradients(topk: int) -> None:
    q, k, v = _qkv(2, 3, 7, 64, 8)
    ours = topk_memory_attention(q, k, v, topk)
    ref, _ = memory_querying_responding(q, k, v, topk=topk)
    assert torch.allclose(ours, ref, atol=1e-6)
    w = torch.randn_like(ours)
    g_ours = torch.autograd.grad((ours * w).sum(), (q, k, v))
    g_ref = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-5)


def test_shared_memory_keys_broadcast_over_the_batch() -> None:
    torch.manual_seed(0)
    cmn = CrossModalMemory(dim=16, slots=32, heads=4, topk=6, dropout=0.0).eval()
    x = torch.randn(3, 5, 16)
    k, v = cmn.project_memory()                                   # h M dk
    expanded = (k.expand(3, -1, -1, -1), v.expand(3, -1, -1, -1))
    q = cmn.q_proj(x).view(3, 5, 4, 4).transpose(1, 2)
    ref, _ = memory_querying_responding(q, *expanded, topk=6)
    assert torch.allclose(cmn(x), cmn.out_proj(ref.transpose(1, 2).reshape(3, 5, 16)), atol=1e-6)
    assert torch.allclose(cmn(x[:, 2:3]), cmn(x)[:, 2:3], atol=1e-6)   # per query: responses are cacheable


def test_peak_memory_is_much_smaller_than_expand_gather() -> None:
    def peak(fn) -> int:
        q, k, v = _qkv(1, 8, 32, 256, 32)                          # a scaled-down visual query
        with PeakMemory() as m:
            fn(q, k, v).sum().backward()
        return m.peak

    ours = peak(lambda q, k, v: topk_memory_attention(q, k, v, 64))
    ref = peak(lambda q, k, v: memory_querying_responding(q, k, v, topk=64)[0])
    assert ours * 10 < ref, (ours, ref)                            # measured: 1.5 MB vs 19.6 MB
