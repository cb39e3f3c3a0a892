"""torchrun with gloo on CPU: 2 processes give the same results as 1 with the same global batch."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from milkit import distributed

RECIPE = """\
[run]
name = "ddp"
seed = 5

[cohort]
csv = "{csv}"
val_fraction = 0.25
test_fraction = 0.25

[aggregator]
name = "abmil"
embed_dim = 16
attn_dim = 8
dropout = 0.0                 # dropout draws differ per rank; exact equality needs it off

[head]
name = "classification"

[train]
epochs = 4
batch_size = 4                # the global batch: 2 bags per rank under 2 processes
lr = 1e-2
"""


def test_shard_unshard_roundtrip():
    items = list(range(11))
    parts = [distributed.shard(items, r, 3) for r in range(3)]
    assert parts[1] == [1, 4, 7, 10] and distributed.unshard(parts) == items


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, synthetic_cohort):
    recipe = tmp_path / "ddp.toml"
    recipe.write_text(RECIPE.format(csv=synthetic_cohort))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MILKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    one = subprocess.run([sys.executable, "-m", "milkit", "run", str(recipe), "--out", str(tmp_path / "one"), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    two = subprocess.run([*torchrun, "-m", "milkit", "run", str(recipe), "--out", str(tmp_path / "two"), "--quiet"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "metrics.json").read_text())["folds"][0]
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())["folds"][0]
    assert a["best_epoch"] == b["best_epoch"]
    for split in ("val", "test"):
        for key, value in a["metrics"][split].items():
            if isinstance(value, float):
                assert b["metrics"][split][key] == pytest.approx(value, abs=1e-5), (split, key)
    la = [json.loads(x) for x in (tmp_path / "one/fold_0/metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "two/fold_0/metrics.jsonl").read_text().splitlines()]
    assert [x["train_loss"] for x in lb] == pytest.approx([x["train_loss"] for x in la], rel=1e-5)
    # resume across a changed number of ranks: continue the 2-rank run's checkpoint in 1 process
    shutil.copytree(tmp_path / "two", tmp_path / "resumed")
    (tmp_path / "resumed/fold_0/result.json").unlink()
    more = subprocess.run([sys.executable, "-m", "milkit", "run", str(recipe), "--out", str(tmp_path / "resumed"),
                           "--resume", "--quiet", "--set", "train.epochs=5"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert more.returncode == 0, more.stderr[-2000:]
    lines = (tmp_path / "resumed/fold_0/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4, 5]
