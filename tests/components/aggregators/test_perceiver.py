"""Perceiver resampler aggregator: parity with lucidrains' and HistoGPT's code, masks, tokens, training."""

import pytest
import torch

from milkit.components.aggregators.perceiver import Perceiver, PerceiverConfig
from milkit.testing import check_aggregator
import _reference_perceiver as ref
from _bags import junk_padded

SMALL = {"dim": 32, "depth": 2, "num_latents": 8, "heads": 4, "dim_head": 8, "ff_mult": 2}
IN_DIM = 24


def build(**cfg) -> Perceiver:
    torch.manual_seed(0)
    return Perceiver(PerceiverConfig(**{**SMALL, **cfg}), in_dim=IN_DIM).eval()


def padded_batch(lengths: list[int], pad_to: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return junk_padded(lengths, IN_DIM, pad_to)


def lucidrains_of(model: Perceiver) -> ref.PerceiverResampler:
    """lucidrains' PerceiverResampler (one medium) holding ``model``'s weights (all but the projection)."""
    c = model.config
    theirs = ref.PerceiverResampler(dim=c.dim, depth=c.depth, dim_head=c.dim_head, heads=c.heads,
                                    num_latents=c.num_latents, num_time_embeds=1, ff_mult=c.ff_mult)
    state = {k: v for k, v in model.state_dict().items() if k != "proj.weight"}
    state["time_pos_emb"] = state.pop("media_pos")[:, None]                                 # 1 1 d
    theirs.load_state_dict(state)
    return theirs.eval()


def histogpt_of(model: Perceiver) -> ref.HistoGPTPerceiverResampler:
    c = model.config
    theirs = ref.HistoGPTPerceiverResampler(IN_DIM, c.dim, c.dim_head, c.heads, c.depth, c.num_latents,
                                            ffwn_mult=c.ff_mult)
    state = {k.replace("proj.", "linear."): v for k, v in model.state_dict().items()}
    state["media_pos"] = state["media_pos"][:, None]                                        # 1 1 d
    theirs.load_state_dict(state)
    return theirs.eval()


def test_conformance_kit_and_registration(registries) -> None:
    check_aggregator(Perceiver, SMALL)
    check_aggregator(Perceiver, {**SMALL, "pool": "first", "depth": 1})
    assert registries.aggregators.get("perceiver") is Perceiver
    assert Perceiver.provides_tokens and Perceiver.permutation_invariant


@pytest.mark.parametrize("n", [1, 7, 64, 300])
@pytest.mark.parametrize("depth", [1, 3])
def test_parity_with_the_references_without_padding(n: int, depth: int) -> None:
    """Same weights, one unpadded bag: tokens = lucidrains' latents (after the projection) = HistoGPT's latents;
    attention = the last PerceiverAttention's weights on the patches, mean over heads and latents."""
    model = build(depth=depth)
    feats = torch.randn(1, n, IN_DIM, generator=torch.Generator().manual_seed(n))
    lucid, histogpt = lucidrains_of(model), histogpt_of(model)
    with torch.no_grad():
        out = model(feats, torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, 2))
        want = lucid(model.proj(feats))[:, 0]                                               # 1 l d
        torch.testing.assert_close(out.tokens, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.tokens, histogpt(feats)[:, 0], atol=1e-5, rtol=0)
        weights = lucid.layers[-1][0].attn[:, :, 0]                                           # 1 h l n+l
        torch.testing.assert_close(out.attention, weights[..., :n].mean(dim=(1, 2)), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.embedding, out.tokens.mean(1))
    assert out.token_mask.all() and out.token_mask.shape == (1, model.config.num_latents)


def test_padding_never_changes_outputs() -> None:
    """Bags padded together (with loud junk in the padding, one bag empty) == each bag alone."""
    for pool in ("mean", "first"):
        model = build(pool=pool)
        lengths = [37, 5, 1, 0]
        feats, mask, coords = padded_batch(lengths, pad_to=50)
        with torch.no_grad():
            both = model(feats, mask, coords)
            for i, n in enumerate(lengths):
                alone = model(feats[i:i + 1, :n], mask[i:i + 1, :n], coords[i:i + 1, :n])
                torch.testing.assert_close(both.embedding[i], alone.embedding[0], atol=1e-5, rtol=0)
                torch.testing.assert_close(both.tokens[i], alone.tokens[0], atol=1e-5, rtol=0)
                torch.testing.assert_close(both.attention[i, :n], alone.attention[0], atol=1e-6, rtol=0)
        assert torch.all(both.attention[~mask] == 0)
        share = both.attention.sum(1)                                                        # weight on patches
        assert torch.all((share[:3] > 0) & (share[:3] < 1)) and share[3] == 0
        assert torch.isfinite(both.embedding).all()


def test_pool_first_is_latent_zero() -> None:
    model = build(pool="first")
    feats, mask, coords = padded_batch([9, 4], pad_to=9)
    with torch.no_grad():
        out = model(feats, mask, coords)
    torch.testing.assert_close(out.embedding, out.tokens[:, 0])


def test_every_parameter_gets_a_gradient_and_training_lowers_the_loss() -> None:
    model = build().train()
    classifier = torch.nn.Linear(model.out_dim, 2)
    feats, mask, coords = padded_batch([12, 7, 20], pad_to=20)
    labels = torch.tensor([0, 1, 1])
    feats = feats + labels[:, None, None] * mask[..., None]                                 # learnable signal
    opt = torch.optim.Adam([*model.parameters(), *classifier.parameters()], lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(classifier(model(feats, mask, coords).embedding), labels)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert missing == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bf16_autocast() -> None:
    model = build()
    feats, mask, coords = padded_batch([30, 0, 3], pad_to=30)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(feats, mask, coords)
    assert torch.isfinite(out.embedding.float()).all() and torch.isfinite(out.attention.float()).all()
    assert torch.all(out.attention[~mask] == 0)


def test_default_architecture_matches_the_reference() -> None:
    """dim 1024, depth 2, 64 latents, 8 heads of 64, ff_mult 4: lucidrains' PerceiverResampler for one medium
    plus HistoGPT's bias-free projection."""
    model = Perceiver(PerceiverConfig(), in_dim=768)
    c = model.config
    assert (c.dim, c.depth, c.num_latents, c.heads, c.dim_head, c.ff_mult, c.pool) == (1024, 2, 64, 8, 64, 4, "mean")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    lucid = ref.PerceiverResampler(dim=1024, depth=2, num_time_embeds=1)                   # class defaults
    assert count(model) == count(lucid) + 768 * 1024 == count(ref.HistoGPTPerceiverResampler(768, 1024, 64, 8, 2, 64))
