"""The faithful variant + converter reproduce HistGen's own code (ported in _reference_histgen)."""

import pytest
import torch
from _histgen_helpers import word_tokenizer
from _reference_histgen import HistGenModel, small_args

from milkit.histgen.convert import convert_state_dict, infer_sizes
from milkit.histgen.importer import build_faithful
from milkit.model import Bags

V, D = 19, 20


@pytest.fixture(scope="module")
def pair():
    """A random upstream HistGen (eval) and the milkit model converted from its state dict."""
    torch.manual_seed(0)
    args = small_args(max_seq_length=14)
    ref = HistGenModel(args, V, in_dim=D).eval()
    with torch.no_grad():                                             # sharper, longer outputs than at init
        ref.encoder_decoder.logit.weight.mul_(2.0)
        ref.encoder_decoder.logit.bias[0] += 1.1
    sd = ref.state_dict()
    sizes = infer_sizes(sd)
    model, *_ = build_faithful(sizes, word_tokenizer(V), num_heads=args.num_heads, topk=args.topk,
                               prototype_num=args.prototype_num, max_seq_length=args.max_seq_length)
    model.load_state_dict(convert_state_dict(sd, model.state_dict()), strict=True)
    return ref, model.eval()


def test_sizes_are_read_from_the_weights(pair) -> None:
    ref, model = pair
    sizes = infer_sizes(ref.state_dict())
    assert sizes == {"in_dim": D, "d_vf": 48, "d_model": 32, "d_ff": 24, "cmm_size": 24, "cmm_dim": 32,
                     "outputs": V + 1, "num_layers": 3, "region_size": 8}


@pytest.mark.parametrize("n", [1, 7, 8, 30, 61])
def test_teacher_forced_logprobs_match(pair, n: int) -> None:
    ref, model = pair
    g = torch.Generator().manual_seed(n)
    feats = torch.randn(1, n, D, generator=g)
    seq = torch.cat([torch.zeros(1, 1, dtype=torch.long), torch.randint(1, V + 1, (1, 11), generator=g),
                     torch.zeros(1, 1, dtype=torch.long)], 1)
    with torch.no_grad():
        expected = ref.forward_train(feats, seq)                        # 1 t v
        x = model.encode(Bags(feats, torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, 2)))
        got = model.head(x, {"ids": seq}).values["logprobs"]
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4


def test_beam_search_tokens_match_for_a_padded_batch(pair) -> None:
    ref, model = pair
    g = torch.Generator().manual_seed(7)
    bags = [torch.randn(1, n, D, generator=g) for n in (3, 9, 40, 23)]
    with torch.no_grad():
        expected = [ref.sample(f, beam_size=3)[0] for f in bags]
        n = max(b.shape[1] for b in bags)
        feats, mask = torch.zeros(len(bags), n, D), torch.zeros(len(bags), n, dtype=torch.bool)
        for i, b in enumerate(bags):
            feats[i, : b.shape[1]], mask[i, : b.shape[1]] = b[0], True
        got = model.head.generate(model.encode(Bags(feats, mask, torch.zeros(len(bags), n, 2))), "beam")
    lengths = [int((e != 0).cumprod(0).sum()) for e in expected]
    assert min(lengths) < 14 == max(lengths)                           # beams that stopped and beams cut at 14
    for e, o in zip(expected, got):
        assert torch.equal(e, o)
