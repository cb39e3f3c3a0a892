"""dsmil_example: the milkit conformance kit, discovery through the entry point (next to the built-in
``dsmil``), and the paper's computation."""

import importlib.metadata
import math

import torch

from milkit.plugins import get_plugin_manager
from milkit.registry import build_registries
from milkit.testing import check_aggregator
from milkit_dsmil import DSMIL, DSMILConfig


def test_contract() -> None:
    check_aggregator(DSMIL)


def test_contract_with_every_option() -> None:
    check_aggregator(DSMIL, {"n_critical": 3, "passing_v": True, "nonlinear_query": False, "dropout": 0.2})


def test_plugin_is_discovered() -> None:  # "is it installed?": found through the milkit entry point
    provider = build_registries(get_plugin_manager()).aggregators.provider("dsmil_example")
    assert (provider.plugin, provider.distribution) == ("dsmil", "milkit-dsmil")
    assert provider.version == importlib.metadata.version("milkit-dsmil")


def test_loads_next_to_the_builtin_dsmil() -> None:  # distinct names: no duplicate-name refusal
    registries = build_registries(get_plugin_manager())
    assert not [p for p in registries.problems if "dsmil" in p], registries.problems
    assert registries.aggregators.get("dsmil_example") is DSMIL
    assert registries.aggregators.provider("dsmil").distribution == "milkit"


def test_matches_the_reference_bag_classifier() -> None:
    """Per-bag loop of binli123/dsmil-wsi ``BClassifier.forward`` on the same weights, one bag at a time."""
    torch.manual_seed(0)
    model = DSMIL(DSMILConfig(embed_dim=8, n_critical=2, query_dim=4), in_dim=5).eval()
    feats, lengths = torch.randn(2, 7, 5), [7, 4]
    mask = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    out = model(feats, mask, torch.zeros(2, 7, 2))
    for b, n in enumerate(lengths):
        h = model.embed(feats[b, :n])                                   # n e
        c = model.instance_classifier(h)                                # n C
        q = model.query(h)                                              # n q
        bags, attns = [], []
        for i in range(c.shape[1]):
            q_max = model.query(h[c[:, i].argmax()])                    # q
            a = torch.softmax(q @ q_max / math.sqrt(q.shape[1]), 0)     # n
            bags.append((a[:, None] * h).sum(0))
            attns.append(a)
        expected = torch.cat([torch.cat(bags), c.max(0).values])
        torch.testing.assert_close(out.embedding[b], expected)
        torch.testing.assert_close(out.attention[b, :n], torch.stack(attns, 1).mean(1))
        assert torch.all(out.attention[b, n:] == 0)                    # padding gets no weight
    assert model.out_dim == 2 * (8 + 1)
