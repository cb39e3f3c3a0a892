"""Greedy decoding and HistGen's beam search, batched over slides, on a cached decoder.

Beam search follows ``CaptionModel.beam_search`` (HistGen / ruotianluo's captioning code)
with group size 1: candidates are ranked by the beams' summed log-probabilities (no length
penalty); a beam that emits EOS (id 0) is finished and its running score lowered by 1000;
at the last step every beam is finished; the finished beam with the highest summed
log-probability wins (earliest finished on ties). Unlike the reference, the loop stops as
soon as no live beam can beat the best finished one (scores only decrease), which does
not change the result.
"""

import torch
from torch import Tensor

from milkit.histgen.decoder import ReportDecoder

EOS = 0


@torch.no_grad()
def greedy_decode(decoder: ReportDecoder, memory: Tensor, memory_mask: Tensor, max_len: int) -> Tensor:
    """Arg-max decoding -> ids [b, max_len] (EOS then zeros after the end)."""
    b = memory.shape[0]
    state = decoder.start(memory, memory_mask, 1, max_len)
    out = torch.zeros(b, max_len, dtype=torch.long, device=memory.device)
    ids = torch.full((b,), EOS, dtype=torch.long, device=memory.device)  # BOS = 0
    alive = torch.ones(b, dtype=torch.bool, device=memory.device)
    for t in range(max_len):
        ids = decoder.step(state, ids).argmax(-1) * alive             # finished rows emit 0
        out[:, t] = ids
        alive &= ids != EOS
        if not alive.any():
            break
    return out


@torch.no_grad()
def beam_search(decoder: ReportDecoder, memory: Tensor, memory_mask: Tensor, beam_size: int, max_len: int) -> Tensor:
    """HistGen's beam search (module docstring) -> best ids [b, max_len], zero-padded."""
    b, k, dev = memory.shape[0], beam_size, memory.device
    state = decoder.start(memory, memory_mask, k, max_len)
    logprobs = decoder.step(state, torch.full((b * k,), EOS, dtype=torch.long, device=dev))  # (b k) v
    v = logprobs.shape[-1]
    if k > v:
        raise ValueError(f"beam_size ({k}) is larger than the number of tokens ({v})")
    sums = torch.zeros(b, k, device=dev)
    seqs = torch.zeros(b, k, 0, dtype=torch.long, device=dev)
    best = torch.zeros(b, max_len, dtype=torch.long, device=dev)
    best_score = torch.full((b,), float("-inf"), device=dev)
    rows = torch.arange(b, device=dev)[:, None] * k                 # b 1
    for t in range(max_len):
        lp = logprobs.view(b, k, v)
        cand = (sums[:, :1, None] + lp[:, :1]) if t == 0 else (sums[..., None] + lp)   # b k' v
        sums, ix = torch.sort(cand.reshape(b, -1), -1, descending=True)
        sums, ix = sums[:, :k], ix[:, :k]                              # b k
        beam, tok = ix // v, ix % v
        seqs = torch.cat([seqs.gather(1, beam[..., None].expand(-1, -1, t)), tok[..., None]], 2)  # b k t+1
        state.reorder((rows + beam).reshape(-1))
        ended = tok == EOS if t < max_len - 1 else torch.ones_like(tok, dtype=torch.bool)
        score, which = sums.masked_fill(~ended, float("-inf")).max(1)  # first maximal beam
        better = score > best_score
        best[better] = 0
        best[better, : t + 1] = seqs[better, which[better]]
        best_score = torch.where(better, score, best_score)
        sums = sums - 1000.0 * ended
        if t == max_len - 1 or bool((sums.max(1).values <= best_score).all()):
            break
        logprobs = decoder.step(state, tok.reshape(-1))
    return best
