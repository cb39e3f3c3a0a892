"""The trainer adds an aggregator's auxiliary losses (Aggregator.auxiliary_losses) to the head's loss
and logs each term; an aggregator without one trains exactly as before."""


import torch
from pydantic import Field
from torch import Tensor

from milkit import AggregatorOutput, hookimpl
from milkit.components.aggregators.mean_pool import MeanPool, MeanPoolConfig
from milkit.components.heads.classification import Classification, ClassificationConfig
from milkit.model import Bags, MILModel
from milkit.plugins import get_plugin_manager
from milkit.registry import build_registries


class ShrinkConfig(MeanPoolConfig):
    shrink_weight: float = Field(1.0, ge=0, description="Weight of the embedding-norm penalty.")


class ShrinkPool(MeanPool):
    """Mean pooling plus an auxiliary penalty on the squared embedding (stands in for an instance loss)."""

    name = "shrink_pool"
    Config = ShrinkConfig

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        out = super().forward(feats, mask, coords)
        out.aux["norm"] = out.embedding.pow(2).mean()
        return out

    def auxiliary_losses(self, out: AggregatorOutput, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        assert "label" in targets  # the head's targets reach the aggregator (CLAM needs the label)
        return {"shrink": self.config.shrink_weight * out.aux["norm"]}


class Plugin:
    @hookimpl
    def milkit_register_aggregators(self) -> list[type]:
        return [ShrinkPool]


def _bags() -> tuple[Bags, list[dict]]:
    feats = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    return Bags(feats, mask, torch.zeros(2, 5, 2)), [{"slide_id": "a", "label": "x"}, {"slide_id": "b", "label": "y"}]


def test_training_loss_is_the_head_loss_plus_each_auxiliary_term():
    torch.manual_seed(0)
    agg = ShrinkPool(ShrinkConfig(embed_dim=4, shrink_weight=0.5), in_dim=8)
    head = Classification(ClassificationConfig(n_boot=0), in_dim=4, target_state={"classes": ["x", "y"]})
    model = MILModel(agg, head)
    bags, rows = _bags()
    targets = head.collate_targets(rows)
    out = model(bags, targets)
    expected_aux = 0.5 * agg(bags.feats, bags.mask, bags.coords).embedding.pow(2).mean()
    assert set(out.aux_losses) == {"shrink"} and torch.allclose(out.aux_losses["shrink"], expected_aux)
    assert torch.allclose(model.training_loss(out, targets), head.loss(out, targets) + expected_aux)
    assert model(bags).aux_losses == {}  # no targets (inference): no auxiliary terms


def test_an_aggregator_without_auxiliary_losses_adds_nothing():
    agg = MeanPool(MeanPoolConfig(embed_dim=4), in_dim=8)
    head = Classification(ClassificationConfig(n_boot=0), in_dim=4, target_state={"classes": ["x", "y"]})
    model = MILModel(agg, head)
    bags, rows = _bags()
    targets = head.collate_targets(rows)
    out = model(bags, targets)
    assert out.aux_losses == {} and torch.equal(model.training_loss(out, targets), head.loss(out, targets))


def test_each_term_is_logged_per_epoch_and_weighs_in_the_training_loss(train_briefly):
    pm = get_plugin_manager(autoload=False)
    pm.register(Plugin(), name="shrink")
    registries = build_registries(pm)
    epochs = {w: train_briefly(registries, name="shrink_pool", embed_dim=8, shrink_weight=w, train={"lr": 1e-2})
              for w in (0.0, 5.0)}
    assert [e["train_aux_shrink"] for e in epochs[0.0]] == [0.0, 0.0]
    assert all(e["train_aux_shrink"] > 0 for e in epochs[5.0])
    # the first epoch starts from the same weights: the penalty is in the optimised loss
    assert epochs[5.0][0]["train_loss"] > epochs[0.0][0]["train_loss"]
