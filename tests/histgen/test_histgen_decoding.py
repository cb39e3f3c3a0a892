"""Cached decoding: equals full recomputation; beam 1 equals greedy; batching changes nothing."""

import pytest
import torch
from _histgen_helpers import IN_DIM, pad, small_model

from milkit.histgen.decoding import beam_search, greedy_decode


@pytest.fixture(scope="module")
def encoded():
    model = small_model("fixed", seed=3, eos_bias=2.5)
    torch.manual_seed(4)
    bags = [torch.randn(n, IN_DIM) for n in (2, 11, 29, 6)]
    with torch.no_grad():
        x = model.encode(pad(bags))
    return model.head.decoder, x.tokens, x.token_mask, bags, model


def test_cached_steps_equal_full_recompute(encoded) -> None:
    decoder, memory, mask, _, _ = encoded
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.zeros(4, 1, dtype=torch.long), torch.randint(1, 21, (4, 9), generator=g)], 1)  # no EOS
    with torch.no_grad():
        full = decoder(ids, memory, mask)                           # b t v
        state = decoder.start(memory, mask, 1, 12)
        steps = torch.stack([decoder.step(state, ids[:, t]) for t in range(ids.shape[1])], 1)
    assert torch.allclose(steps, full, atol=1e-5)


def test_beam_of_one_is_greedy(encoded) -> None:
    decoder, memory, mask, _, _ = encoded
    greedy = greedy_decode(decoder, memory, mask, 14)
    beam = beam_search(decoder, memory, mask, 1, 14)
    assert torch.equal(greedy, beam)
    lengths = (greedy != 0).sum(1)
    assert lengths.min() < 13 and (greedy[:, -1] == 0).any()          # some reports end before the limit


@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_batched_decoding_equals_one_slide_at_a_time(encoded, mode: str) -> None:
    _, _, _, bags, model = encoded
    with torch.no_grad():
        batch = model.head.generate(model.encode(pad(bags)), mode)
        for i, b in enumerate(bags):
            assert torch.equal(batch[i], model.head.generate(model.encode(pad([b])), mode)[0])


def test_beam_search_prefers_the_most_likely_finished_report(encoded) -> None:
    decoder, memory, mask, _, _ = encoded
    beam = beam_search(decoder, memory, mask, 3, 14)
    greedy = greedy_decode(decoder, memory, mask, 14)

    def score(seqs: torch.Tensor) -> torch.Tensor:                    # summed log-prob incl. EOS
        ids = torch.cat([torch.zeros(len(seqs), 1, dtype=torch.long), seqs], 1)
        with torch.no_grad():
            lp = decoder(ids[:, :-1], memory, mask).gather(-1, ids[:, 1:, None]).squeeze(-1)
        ended = (seqs == 0).long().cumsum(1)
        keep = (ended == 0) | ((ended == 1) & (seqs == 0))            # tokens up to the first EOS
        return (lp * keep).sum(1)

    assert (score(beam) >= score(greedy) - 1e-4).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_training_step_and_decoding() -> None:
    model = small_model("fixed", eos_bias=2.5).cuda().train()
    bags = pad([torch.randn(n, IN_DIM) for n in (3, 40)]).to("cuda")
    ids = torch.tensor([[0, 3, 4, 5, 0], [0, 6, 0, 0, 0]], device="cuda")
    targets = {"ids": ids, "lengths": torch.tensor([5, 3], device="cuda")}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.head.loss(model(bags, targets), targets)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        gpu = model.head(model.encode(bags), targets).values["logprobs"].cpu()
        assert model.head.generate(model.encode(bags), "beam").shape == (2, 14)
        model.cpu()
        cpu = model.head(model.encode(bags.to("cpu")), {k: v.cpu() for k, v in targets.items()}).values["logprobs"]
    assert torch.allclose(gpu, cpu, atol=1e-3)
