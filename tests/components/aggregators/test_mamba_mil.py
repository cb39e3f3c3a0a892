"""MambaMIL aggregator: parity with the reference forward (and gradients), the SRMamba reordering,
masks and padding, the reference's initialisation, training."""

import pytest
import torch
import torch.nn.functional as F

from milkit.components.aggregators.mamba_mil import MambaMIL, MambaMILConfig
from milkit.nn import mamba
from milkit.testing import check_aggregator
import _reference_mamba_mil as ref
from _bags import junk_padded

IN_DIM = 24
SMALL = {"embed_dim": 32, "d_state": 4, "dropout": 0.0}
KINDS = ("SRMamba", "BiMamba", "Mamba")


def build(**cfg) -> MambaMIL:
    torch.manual_seed(0)
    return MambaMIL(MambaMILConfig(**{"dropout": 0.0, **cfg}), in_dim=IN_DIM).eval()


def their_name(key: str) -> str:
    """milkit's parameter name -> the reference's (fc1 -> _fc1, scan_b.conv1d -> conv1d_b, scan_b.A_log -> A_b_log)."""
    key = "_" + key if key.startswith("fc1.") else key
    for name in ("conv1d", "x_proj", "dt_proj", "D"):
        key = key.replace(f".scan_b.{name}", f".{name}_b")
    return key.replace(".scan_b.A_log", ".A_b_log").replace(".scan.", ".")


def reference_of(model: MambaMIL, classifier: torch.nn.Linear) -> ref.MambaMIL:
    """The reference MambaMIL holding the weights of ``model`` and of the head's linear layer."""
    cfg = model.config
    theirs = ref.MambaMIL(IN_DIM, classifier.out_features, cfg.dropout, cfg.act, layer=cfg.num_layers,
                          rate=cfg.rate, type=cfg.layer_type, d_model=cfg.embed_dim, d_state=cfg.d_state)
    state = {their_name(key): value for key, value in model.state_dict().items()}
    state.update({f"classifier.{k}": v for k, v in classifier.state_dict().items()})
    theirs.load_state_dict(state, strict=True)
    return theirs.eval()


def padded_batch(lengths: list[int], pad_to: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, IN_DIM, pad_to, seed)[:2]


def test_conformance_kit_and_registration(registries) -> None:
    for kind in KINDS:
        check_aggregator(MambaMIL, {**SMALL, "layer_type": kind, "rate": 3})
    assert registries.aggregators.get("mamba_mil") is MambaMIL
    assert MambaMIL.permutation_invariant is False


@pytest.mark.parametrize(("kind", "rate"), [("SRMamba", 10), ("SRMamba", 4), ("BiMamba", 10), ("Mamba", 10)])
def test_parity_with_the_reference(kind: str, rate: int) -> None:
    """Default widths (512, d_state 16); bags shorter than rate, a multiple of it, neither, and longer than
    one scan chunk (64 steps): embedding, attention and logits match the reference within 1e-5."""
    model = build(layer_type=kind, rate=rate)
    head = torch.nn.Linear(512, 3)
    theirs = reference_of(model, head)
    for n in (1, 3, 10, 23, 150):
        feats = torch.randn(1, n, IN_DIM, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            out = model(feats, torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, 2))
            logits, pooled, attn = theirs(feats)
        torch.testing.assert_close(out.embedding, pooled, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.attention, attn[:, 0], atol=1e-6, rtol=0)
        torch.testing.assert_close(head(out.embedding), logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["SRMamba", "BiMamba"])
def test_gradients_match_the_reference(kind: str) -> None:
    """Through the checkpointed chunked scan (70 patches: two chunks), every gradient matches autograd
    through the reference's selective_scan_ref."""
    model = build(**SMALL, layer_type=kind, rate=4)
    head = torch.nn.Linear(32, 3)
    theirs = reference_of(model, head)
    feats, label = torch.randn(1, 70, IN_DIM), torch.tensor([2])
    F.cross_entropy(head(model(feats, torch.ones(1, 70, dtype=torch.bool), torch.zeros(1, 70, 2)).embedding),
                    label).backward()
    F.cross_entropy(theirs(feats)[0], label).backward()
    theirs_params = dict(theirs.named_parameters())
    assert len(theirs_params) == len(list(model.parameters())) + 2                # + the classifier
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, theirs_params[their_name(name)].grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_a_padded_batch_equals_each_bag_alone_and_the_reference(kind: str) -> None:
    """Bags of several lengths padded with junk: SRMamba's grid is built from each bag's own length."""
    model = build(**SMALL, layer_type=kind, rate=4)
    head = torch.nn.Linear(32, 2)
    theirs = reference_of(model, head)
    lengths = [23, 7, 8, 1, 0, 13]
    feats, mask = padded_batch(lengths, pad_to=30)
    with torch.no_grad():
        both = model(feats, mask, torch.zeros(6, 30, 2))
        for i, n in enumerate(lengths):
            alone = model(feats[i:i + 1, :n], mask[i:i + 1, :n], torch.zeros(1, n, 2))
            torch.testing.assert_close(both.embedding[i], alone.embedding[0], atol=1e-6, rtol=0)
            torch.testing.assert_close(both.attention[i, :n], alone.attention[0], atol=1e-6, rtol=0)
            if n:
                _, pooled, attn = theirs(feats[i:i + 1, :n])
                torch.testing.assert_close(both.embedding[i:i + 1], pooled, atol=1e-5, rtol=0)
                torch.testing.assert_close(both.attention[i, :n], attn[0, 0], atol=1e-6, rtol=0)
    assert torch.all(both.attention[~mask] == 0)
    assert both.embedding[4].abs().sum() == 0                                       # empty bag: zeros


def test_padding_inside_the_bag_is_skipped() -> None:
    """Real patches keep their order wherever the padding sits; attention stays at their positions."""
    model = build(**SMALL, rate=3)
    feats, mask = padded_batch([9], pad_to=9)
    holes = torch.tensor([[True, False, True, True, False, False, True, True, True]])
    with torch.no_grad():
        packed = model(feats[:, holes[0]], torch.ones(1, 6, dtype=torch.bool), torch.zeros(1, 6, 2))
        spread = model(feats, holes, torch.zeros(1, 9, 2))
    torch.testing.assert_close(spread.embedding, packed.embedding, atol=1e-6, rtol=0)
    torch.testing.assert_close(spread.attention[holes], packed.attention[0], atol=1e-7, rtol=0)
    assert torch.all(spread.attention[~holes] == 0)


def test_reordering_is_the_references_transpose_token_re_embedding() -> None:
    model = build(**SMALL, rate=3)
    order, inverse = model.reorder(torch.tensor([7, 9, 2]), 9)
    assert order.tolist() == [[0, 3, 6, 1, 4, -1, 2, 5, -1],                          # (3, 3) grid, 2 zero tokens
                              [0, 3, 6, 1, 4, 7, 2, 5, 8],
                              [0, 1, -1, -1, -1, -1, -1, -1, -1]]                     # n < rate: forward order
    for i, n in enumerate([7, 9, 2]):                       # the reference's padding + rearrange of 1..n
        read = ref.TransposeTokenReEmbedding.transpose_normal_padding(torch.arange(1.0, n + 1)[None, None], 3)
        want = read[0, 0].long() - 1                                                  # -1: its zero tokens
        assert order[i].tolist() == want.tolist() + [-1] * (9 - len(want))
        assert inverse[i, :n].tolist() == [want.tolist().index(p) for p in range(n)]  # the step reading p
    bi_order, bi_inverse = build(**SMALL, layer_type="BiMamba").reorder(torch.tensor([3, 5]), 5)
    assert bi_order.tolist() == [[2, 1, 0, -1, -1], [4, 3, 2, 1, 0]]
    assert bi_inverse[0, :3].tolist() == [2, 1, 0] and bi_inverse[1].tolist() == [4, 3, 2, 1, 0]
    assert build(**SMALL, layer_type="Mamba").reorder(torch.tensor([3]), 5) == (None, None)


def test_the_output_follows_the_patch_order() -> None:
    feats, mask = padded_batch([12], pad_to=12)
    coords = torch.zeros(1, 12, 2)
    for kind in KINDS:
        model = build(**SMALL, layer_type=kind, rate=4)
        with torch.no_grad():
            a, b = model(feats, mask, coords), model(feats.flip(1), mask, coords)
        assert not torch.allclose(a.embedding, b.embedding, atol=1e-4)
    with torch.no_grad():
        outs = [build(**SMALL, layer_type="SRMamba", rate=r)(feats, mask, coords).embedding for r in (2, 4)]
    assert not torch.allclose(*outs, atol=1e-4)                                     # the rate matters


def test_selective_scan_matches_selective_scan_ref_across_chunks() -> None:
    gen = torch.Generator().manual_seed(0)
    b, l, d, n = 2, 2 * mamba.CHUNK + 5, 6, 3
    u, dt, z = (torch.randn(b, l, d, generator=gen) for _ in range(3))
    B, C = torch.randn(b, l, n, generator=gen), torch.randn(b, l, n, generator=gen)
    A, D, bias = -torch.rand(d, n, generator=gen) * 3, torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    want = ref.selective_scan_ref(u.mT, dt.mT, A, B.mT, C.mT, D, z.mT, bias, delta_softplus=True).mT
    got = mamba.selective_scan(u, F.softplus(dt + bias), A, B, C, D, z)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_default_architecture_and_initialisation_are_the_references() -> None:
    model = MambaMIL(MambaMILConfig(), in_dim=1024)
    cfg = model.config
    assert (cfg.layer_type, cfg.num_layers, cfg.rate, cfg.embed_dim, cfg.d_state, cfg.d_conv, cfg.expand,
            cfg.attn_dim, cfg.act, cfg.dropout) == ("SRMamba", 2, 10, 512, 16, 4, 2, 128, "gelu", 0.25)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    theirs = ref.MambaMIL(1024, 2, 0.25, "gelu")
    assert count(model) == count(theirs) - count(theirs.classifier) == 4_226_817
    mixer = model.layers[0][1]
    for scan in (mixer.scan, mixer.scan_b):                      # initialize_weights zeroes every Linear bias
        assert torch.all(scan.dt_proj.bias == 0)
        torch.testing.assert_close(scan.A_log, torch.log(torch.arange(1.0, 17)).repeat(1024, 1))
        assert torch.all(scan.D == 1)
    std = mixer.in_proj.weight.std().item()                      # xavier normal: sqrt(2 / (512 + 2048))
    assert std == pytest.approx((2 / (512 + 2048)) ** 0.5, rel=0.02)
    assert isinstance(model.fc1[1], torch.nn.GELU) and model.fc1[2].p == 0.25


@pytest.mark.parametrize("kind", KINDS)
def test_training_reduces_the_loss_and_reaches_every_parameter(kind: str) -> None:
    model = build(**{**SMALL, "dropout": 0.25}, layer_type=kind, rate=3).train()
    head = torch.nn.Linear(32, 2)
    feats, mask = padded_batch([20, 9, 14, 5], pad_to=20)
    labels = torch.tensor([0, 1, 1, 0])
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=2e-3)
    losses = []
    for step in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(head(model(feats, mask, torch.zeros(*mask.shape, 2)).embedding), labels)
        loss.backward()
        if step == 0:
            bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
            assert bad == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
