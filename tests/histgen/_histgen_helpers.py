"""Small HistGen models and padded batches shared by the HistGen tests."""

import torch
from torch import Tensor

from milkit.histgen.aggregator import HistGen, HistGenConfig
from milkit.histgen.report_head import Report, ReportConfig
from milkit.histgen.tokenizer import Tokenizer
from milkit.model import Bags, MILModel

IN_DIM = 12
SMALL_AGG = dict(d_vf=24, d_model=16, num_heads=2, d_ff=16, region_size=6, prototype_num=8, cmm_size=16,
                 cmm_dim=16, topk=4)
SMALL_HEAD = dict(d_model=16, num_heads=2, d_ff=16, max_seq_length=14, cmm_size=16, topk=4)


def word_tokenizer(vocab: int = 20) -> Tokenizer:
    """A vocabulary of ``vocab`` tokens: <unk>, w02, w03, ..."""
    return Tokenizer({1: "<unk>", **{i: f"w{i:02d}" for i in range(2, vocab + 1)}}, threshold=10)


def small_model(variant: str = "fixed", *, seed: int = 0, eos_bias: float = 0.0, **agg: object) -> MILModel:
    """A small HistGen + report model in eval mode; ``eos_bias`` shifts the EOS logit."""
    torch.manual_seed(seed)
    aggregator = HistGen(HistGenConfig(variant=variant, **{**SMALL_AGG, **agg}), in_dim=IN_DIM)
    state = {"tokenizer": word_tokenizer().to_dict(), "max_seq_length": SMALL_HEAD["max_seq_length"]}
    head = Report(ReportConfig(**SMALL_HEAD), in_dim=aggregator.out_dim, target_state=state)
    with torch.no_grad():
        head.decoder.logit.weight.mul_(4.0)                           # peaky, well-separated predictions
        head.decoder.logit.bias[0] += eos_bias
    return MILModel(aggregator, head).eval()


def pad(bags: list[Tensor], coords: list[Tensor] | None = None, extra: int = 0, fill: float = 0.0) -> Bags:
    """Stack bags [n_i, D] into a padded batch (plus ``extra`` padded rows filled with ``fill``)."""
    n = max(b.shape[0] for b in bags) + extra
    feats = torch.full((len(bags), n, bags[0].shape[1]), fill)
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    xy = torch.full((len(bags), n, 2), 1e6)
    for i, b in enumerate(bags):
        feats[i, : len(b)], mask[i, : len(b)] = b, True
        xy[i, : len(b)] = coords[i] if coords is not None else torch.zeros(len(b), 2)
    return Bags(feats, mask, xy)


def grid_coords(n: int, cols: int = 7, step: float = 256.0) -> Tensor:
    """Level-0 coords of ``n`` patches on a grid ``cols`` wide (row-major)."""
    i = torch.arange(n)
    return torch.stack([(i % cols).float(), (i // cols).float()], 1) * step
