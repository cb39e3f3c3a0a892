"""The trainer adds an aggregator's auxiliary losses (Aggregator.auxiliary_losses) to the head's loss
and logs each term; an aggregator without one trains exactly as before. A head sees the whole training
split through Head.index_train_split before each validation and at the end, and pays nothing if it ignores it."""

from pathlib import Path

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


class IndexingHead(Classification):
    """A classification head that records what the trainer shows it of the training split."""

    name = "indexing_classification"
    seen: list[list[str]] = []

    def index_train_split(self, batches) -> None:
        slides = []
        for x, rows in batches:
            assert not torch.is_grad_enabled() and not self.training and x.embedding.shape[0] == len(rows)
            slides.extend(r["slide_id"] for r in rows)
        IndexingHead.seen.append(slides)


class IndexingPlugin:
    @hookimpl
    def milkit_register_heads(self) -> list[type]:
        return [IndexingHead]


def _run_head(tmp_path: Path, cohort_csv: Path, head: str, **train: int) -> Path:
    """A short run of ``head`` on the synthetic cohort (no plots)."""
    from unittest import mock

    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe

    pm = get_plugin_manager(autoload=False)
    pm.register(IndexingPlugin(), name="indexing")
    registries = build_registries(pm)
    extra = "\n".join(f"{k} = {v}" for k, v in train.items())
    path = tmp_path / f"{head}.toml"
    path.write_text(f'[cohort]\ncsv = "{cohort_csv}"\nval_fraction = 0.25\ntest_fraction = 0.25\n'
                    f'[aggregator]\nname = "mean"\nembed_dim = 8\n[head]\nname = "{head}"\nn_boot = 0\n'
                    f'[train]\nbatch_size = 4\n{extra}\n[eval]\nevery_n_epochs = 2\n')
    with mock.patch("milkit.runner.write_visuals"):
        return run_recipe(validate_recipe(load_recipe(path), registries), registries, out=tmp_path / head,
                          progress=False)


def test_the_head_sees_the_training_split_before_each_validation_and_at_the_end(tmp_path, synthetic_cohort):
    import json

    IndexingHead.seen.clear()
    run = _run_head(tmp_path, synthetic_cohort, "indexing_classification", epochs=3)
    train_slides = json.loads((run / "splits.json").read_text())["folds"][0]["train"]
    validated = [e["epoch"] for e in map(json.loads, (run / "fold_0" / "metrics.jsonl").read_text().splitlines())
                 if "val_loss" in e]
    assert validated == [2, 3] and IndexingHead.seen == [train_slides, train_slides]  # every slide, split order


def test_a_head_that_ignores_the_training_split_costs_no_pass(tmp_path, synthetic_cohort, monkeypatch):
    from milkit.trainer import Trainer

    pulled: list[str] = []
    real = Trainer.encoded

    def counting(self, split):
        for item in real(self, split):
            pulled.append(split)
            yield item

    monkeypatch.setattr(Trainer, "encoded", counting)
    _run_head(tmp_path, synthetic_cohort, "classification", epochs=2)
    assert pulled == []                                        # Head.index_train_split's default never pulls
    IndexingHead.seen.clear()
    _run_head(tmp_path, synthetic_cohort, "indexing_classification", epochs=1)
    assert pulled and set(pulled) == {"train"} and len(IndexingHead.seen) == 1


def _record_bags(tmp_path: Path, cohort_csv: Path, monkeypatch, name: str, **tables: dict) -> list[tuple]:
    """Run ``mean`` + classification with extra ``[train]`` / ``[eval]`` keys; every bag the trainer
    loaded as ``(subsample_seed, slide_id, frozenset of patch coords)``."""
    from unittest import mock

    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import run_recipe
    from milkit.trainer import Trainer

    loaded: list[tuple] = []
    real = getattr(Trainer._load, "__wrapped__", Trainer._load)  # the trainer's own, on a second call too

    def recording(self, batch_rows, subsample_seed):
        bags = real(self, batch_rows, subsample_seed)
        for i, row in enumerate(batch_rows):
            patches = bags.coords[i][bags.mask[i]].tolist()
            loaded.append((subsample_seed, row["slide_id"], frozenset(map(tuple, patches))))
        return bags

    recording.__wrapped__ = real
    monkeypatch.setattr(Trainer, "_load", recording)
    train = {"batch_size": 4, "epochs": 2, **tables.get("train", {})}
    keys = {"train": train, "eval": tables.get("eval", {})}
    text = f'[cohort]\ncsv = "{cohort_csv}"\nval_fraction = 0.25\ntest_fraction = 0.25\n' \
           '[aggregator]\nname = "mean"\nembed_dim = 8\n[head]\nname = "classification"\nn_boot = 0\n' + \
           "".join(f"[{t}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for t, kv in keys.items())
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    registries = build_registries(get_plugin_manager(autoload=False))
    with mock.patch("milkit.runner.write_visuals"):
        run_recipe(validate_recipe(load_recipe(path), registries), registries, out=tmp_path / name, progress=False)
    return loaded


def _whole_bags(cohort_csv: Path) -> dict[str, frozenset]:
    import h5py

    out = {}
    for path in (cohort_csv.parent / "features").glob("*.h5"):
        with h5py.File(path, "r") as f:
            out[path.stem] = frozenset(map(tuple, f["coords"][()].astype(float).tolist()))
    return out


def _epochs(loaded: list[tuple]) -> list[dict[str, frozenset]]:
    """The training draws of each epoch: the seeds under which the whole training split was loaded."""
    by_seed: dict[int, dict[str, frozenset]] = {}
    for seed, slide, patches in loaded:
        if seed is not None:
            by_seed.setdefault(seed, {})[slide] = patches
    biggest = max(len(d) for d in by_seed.values())
    return [d for _, d in sorted(by_seed.items()) if len(d) == biggest]  # not the memory meter's single bag


def test_training_draws_a_new_sub_bag_each_epoch_reproducibly_and_evaluation_sees_whole_bags(
        tmp_path, synthetic_cohort, monkeypatch):
    whole = _whole_bags(synthetic_cohort)
    first = _record_bags(tmp_path, synthetic_cohort, monkeypatch, "a", train={"max_patches": 8})
    again = _record_bags(tmp_path, synthetic_cohort, monkeypatch, "b", train={"max_patches": 8})
    assert first == again                                            # same seed: the same draws, in order
    one, two = _epochs(first)
    for slide, patches in one.items():
        assert len(patches) == min(len(whole[slide]), 8) and patches <= whole[slide]
        assert len(two[slide]) == len(patches) and two[slide] <= whole[slide]
    big = [s for s in one if len(whole[s]) >= 16]
    assert big and all(one[s] != two[s] for s in big)                # a new sub-bag each epoch
    evaluated = [(slide, patches) for seed, slide, patches in first if seed is None]
    assert evaluated and all(patches == whole[slide] for slide, patches in evaluated)   # whole bags


def test_eval_max_patches_is_one_fixed_sub_bag_per_slide(tmp_path, synthetic_cohort, monkeypatch):
    whole = _whole_bags(synthetic_cohort)
    loaded = _record_bags(tmp_path, synthetic_cohort, monkeypatch, "e", eval={"max_patches": 6})
    draws: dict[str, set[frozenset]] = {}
    for seed, slide, patches in loaded:
        if seed is None:
            draws.setdefault(slide, set()).add(patches)
    assert len(draws) > 10 and all(len(d) == 1 for d in draws.values())  # the same sub-bag every epoch and split
    for slide, (patches,) in draws.items():
        assert len(patches) == min(len(whole[slide]), 6) and patches <= whole[slide]
    trained = _epochs(loaded)
    assert all(patches == whole[slide] for epoch in trained for slide, patches in epoch.items())
