"""Parameter counts: faithful = HistGen's model (spec §2.9); fixed = the same minus the dead modules."""

import pytest
import torch
from _histgen_helpers import word_tokenizer

from milkit.histgen.aggregator import HistGen, HistGenConfig
from milkit.histgen.report_head import Report, ReportConfig
from milkit.model import MILModel

V = 2000
DEAD = 3_686_400                                                       # spec §2.8 item 2
SLIDE_POOL = 512 * 128 + 128 + 128 + 1                                 # fixed only: attention pool over regions


def _count(variant: str, in_dim: int) -> int:
    with torch.device("meta"):                                         # full size, no memory, no init cost
        agg = HistGen(HistGenConfig(variant=variant), in_dim=in_dim)
        state = {"tokenizer": word_tokenizer(V).to_dict(), "max_seq_length": 100}
        model = MILModel(agg, Report(ReportConfig(), in_dim=agg.out_dim, target_state=state))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("in_dim,delta", [(1024, 0), (768, -524_288)])
def test_faithful_count_is_histgens(in_dim: int, delta: int) -> None:
    assert _count("faithful", in_dim) == 23_135_744 + 1_025 * (V + 1) + delta


def test_fixed_drops_exactly_the_dead_parameters() -> None:
    assert _count("fixed", 1024) == 23_135_744 + 1_025 * (V + 1) - DEAD + SLIDE_POOL
