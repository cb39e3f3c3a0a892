"""Assertions on an :class:`AggregatorOutput`: its shapes, and equality at real patches and tokens."""

import torch
from torch import Tensor

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.testing.report import assert_close, assert_finite, require
from milkit.testing.synthetic import Bags


def check_output(out: AggregatorOutput, bags: Bags, model: Aggregator, ctx: str) -> None:
    """Shapes, dtypes and finiteness of ``model``'s output for ``bags``; ``ctx`` ends each message."""
    require(isinstance(out, AggregatorOutput), f"forward returned {type(out).__name__}, not AggregatorOutput")
    b, n = bags.mask.shape
    want, got = (b, model.out_dim), tuple(out.embedding.shape)
    require(got == want, f"embedding has shape {got}, expected {want} {ctx}")
    dtype = out.embedding.dtype
    require(dtype == bags.feats.dtype, f"embedding dtype {dtype} != input {bags.feats.dtype}")
    assert_finite(out.embedding, "embedding", ctx)
    if out.attention is not None:
        shape = tuple(out.attention.shape)
        require(shape == (b, n), f"attention has shape {shape}, expected {(b, n)} {ctx}")
        require(out.attention.is_floating_point(), f"attention dtype {out.attention.dtype} is not floating point")
        assert_finite(out.attention, "attention", ctx)
    if type(model).provides_tokens:
        require(out.tokens is not None, f"{type(model).__name__}.provides_tokens is True but tokens is None")
    if out.tokens is not None:
        shape = tuple(out.tokens.shape)
        require(len(shape) == 3 and shape[0] == b, f"tokens has shape {shape}, expected [{b}, T, E]")
        tm = out.token_mask
        require(tm is not None, "tokens is set but token_mask is None")
        assert tm is not None
        require(tm.dtype == torch.bool and tuple(tm.shape) == shape[:2],
                f"token_mask must be bool [{b}, T], got {tm.dtype} {tuple(tm.shape)}")
        assert_finite(out.tokens[tm], "tokens", ctx)


def compare(a: AggregatorOutput, b: AggregatorOutput, mask_a: Tensor, mask_b: Tensor, atol: float, ctx: str) -> None:
    """Embedding, attention at real patches and real tokens of ``a`` and ``b`` agree within ``atol``."""
    assert_close(b.embedding, a.embedding, "embedding", atol, ctx)
    if a.attention is not None and b.attention is not None:
        assert_close(b.attention[mask_b], a.attention[mask_a], "attention at real patches", atol, ctx)
    if a.tokens is not None and b.tokens is not None and a.token_mask is not None and b.token_mask is not None:
        for i in range(a.tokens.shape[0]):
            ta, tb = a.tokens[i][a.token_mask[i]], b.tokens[i][b.token_mask[i]]  # t e (real tokens only)
            assert_close(tb, ta, f"slide {i}'s real tokens", atol, ctx)


def first_slide(out: AggregatorOutput) -> AggregatorOutput:
    """The output restricted to slide 0 (batch of one)."""
    parts = (out.embedding, out.attention, out.tokens, out.token_mask)
    return AggregatorOutput(*(None if t is None else t[:1] for t in parts))
