"""The ``cox`` head: contract, bad-input messages, batching, and that it learns the right sign."""

import logging
import math

import pytest
import torch

from milkit.aggregator import AggregatorOutput
from milkit.components.heads.cox import CoxConfig, CoxSurvival
from milkit.testing import check_head


def make_head(dim: int = 4, **cfg) -> CoxSurvival:
    torch.manual_seed(0)
    return CoxSurvival(CoxConfig(**cfg), in_dim=dim, target_state={})


def test_contract_and_registration(registries) -> None:
    check_head(CoxSurvival, {"n_boot": 50})
    assert registries.heads.get("cox") is CoxSurvival
    assert CoxSurvival.target_columns == ("time", "event")
    assert (CoxSurvival.monitor, CoxSurvival.monitor_mode) == ("c_index", "max")


def test_check_rows_names_bad_slides() -> None:
    rows = [
        {"slide_id": "ok", "time": 10, "event": 1},
        {"slide_id": "neg", "time": -1.0, "event": 0},
        {"slide_id": "nan", "time": float("nan"), "event": 0},
        {"slide_id": "missing", "time": "", "event": 1},
        {"slide_id": "inf", "time": math.inf, "event": 1},
        {"slide_id": "two", "time": 3.0, "event": 2},
        {"slide_id": "word", "time": 3.0, "event": "dead"},
        {"slide_id": "none", "time": 3.0, "event": None},
    ]
    problems = CoxSurvival.check_rows(CoxConfig(), rows)
    assert len(problems) == 2
    time_msg, event_msg = problems
    assert "'time'" in time_msg and all(s in time_msg for s in ("neg", "nan", "missing", "inf"))
    assert "'event'" in event_msg and all(s in event_msg for s in ("two", "word", "none"))
    assert "ok" not in time_msg + event_msg
    assert CoxSurvival.check_rows(CoxConfig(), [{"slide_id": "a", "time": "0", "event": "1.0"}]) == []


def test_batch_without_events_gives_zero_loss_and_finite_grads() -> None:
    head = make_head()
    rows = [{"slide_id": f"s{i}", "time": float(i + 1), "event": 0} for i in range(4)]
    x = AggregatorOutput(embedding=torch.randn(4, 4, requires_grad=True))
    targets = head.collate_targets(rows)
    loss = head.loss(head(x, targets), targets)
    loss.backward()
    assert loss.item() == 0.0 and all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_small_training_batch_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    head = make_head().train()
    rows = [{"slide_id": "a", "time": 1.0, "event": 1}]
    targets = head.collate_targets(rows)
    x = AggregatorOutput(embedding=torch.randn(1, 4))
    with caplog.at_level(logging.WARNING, logger="milkit"):
        head.loss(head(x), targets)
        head.loss(head(x), targets)
    assert sum("batch_size" in r.message for r in caplog.records) == 1


def test_predict_records_and_learning_the_sign() -> None:
    """Embeddings carry the log hazard in one coordinate; training must give c-index > 0.8."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    n = 256
    emb = torch.randn(n, 4, generator=gen)
    t_event = torch.distributions.Exponential(torch.exp(2 * emb[:, 0])).sample()      # higher emb0 => earlier
    t_cens = torch.rand(n, generator=gen) * 3
    rows = [{"slide_id": f"s{i}", "time": float(min(a, c)), "event": int(a <= c)}
            for i, (a, c) in enumerate(zip(t_event.tolist(), t_cens.tolist()))]
    head = make_head(n_boot=100)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(30):
        for start in range(0, n, 16):                                                    # batches of 16 bags
            batch = rows[start:start + 16]
            targets = head.collate_targets(batch)
            loss = head.loss(head(AggregatorOutput(embedding=emb[start:start + 16])), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    with torch.no_grad():
        records = head.predict(AggregatorOutput(embedding=emb), rows)
    assert set(records[0]) == {"slide_id", "time", "event", "risk"} and records[5]["slide_id"] == "s5"
    assert head.risk[1].weight[0, 0] > 0.5                                               # positive, near 2
    m = head.metrics(records[128:], train_records=records[:128])
    assert m["c_index"] > 0.8 and m["c_index_ci95"][0] < m["c_index"] < m["c_index_ci95"][1]
    assert m["c_index_uno"] > 0.75 and 0 < m["ibs"] < 0.25
