"""[aggregator] init/freeze: weights come from another run; frozen weights stay put; mismatches are explained."""

import json

import pytest
from safetensors.torch import load_file

from milkit.errors import CheckpointError
from milkit.recipe import load_recipe, validate_recipe
from milkit.runner import run_recipe

BASE = """\
[run]
name = "{name}"
seed = 1

[cohort]
csv = "{csv}"

[aggregator]
name = "abmil"
embed_dim = {dim}
{extra}

[head]
name = "{head}"

[train]
epochs = 3
batch_size = 8
lr = 1e-2
"""


def run(tmp_path, registries, csv, name, head, extra="", dim=16):
    path = tmp_path / f"{name}.toml"
    path.write_text(BASE.format(name=name, csv=csv, head=head, extra=extra, dim=dim))
    return run_recipe(validate_recipe(load_recipe(path), registries), registries, out=tmp_path / name, progress=False)


def agg_weights(run_dir):
    tensors = load_file(str(run_dir / "fold_0/checkpoints/best.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith("aggregator.")}


def test_frozen_transfer_keeps_pretrained_encoder(tmp_path, registries, synthetic_cohort):
    pre = run(tmp_path, registries, synthetic_cohort, "pre", "classification")
    cox = run(tmp_path, registries, synthetic_cohort, "cox", "cox", extra=f'init = "{pre}"\nfreeze = true')
    metrics = json.loads((cox / "metrics.json").read_text())
    init = metrics["aggregator_init"]
    assert init["from"] == str(pre) and init["frozen"] is True and init["source_head"] == "classification"
    assert init["tensors_loaded"] == len(agg_weights(pre))
    before, after = agg_weights(pre), agg_weights(cox)
    assert all((before[k] == after[k]).all() for k in before)  # frozen: identical to the pre-trained encoder
    assert metrics["folds"][0]["n_trainable_parameters"] < metrics["folds"][0]["n_parameters"]


def test_finetuned_transfer_starts_from_pretrained(tmp_path, registries, synthetic_cohort):
    pre = run(tmp_path, registries, synthetic_cohort, "pre", "classification")
    tuned = run(tmp_path, registries, synthetic_cohort, "tuned", "cox", extra=f'init = "{pre}"')
    assert json.loads((tuned / "metrics.json").read_text())["aggregator_init"]["frozen"] is False
    assert any(not (agg_weights(pre)[k] == v).all() for k, v in agg_weights(tuned).items())


def test_mismatched_config_is_explained(tmp_path, registries, synthetic_cohort):
    pre = run(tmp_path, registries, synthetic_cohort, "pre", "classification")
    with pytest.raises(CheckpointError, match="embed_dim: 16 there vs 32 here"):
        run(tmp_path, registries, synthetic_cohort, "bad", "cox", extra=f'init = "{pre}"', dim=32)
