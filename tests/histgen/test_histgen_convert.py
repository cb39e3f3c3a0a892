"""Importing an official checkpoint: a loadable run dir, and errors that name the key."""

import json
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _reference_histgen import HistGenModel, small_args
from typer.testing import CliRunner

from milkit.errors import CheckpointError
from milkit.histgen.importer import import_histgen
from milkit.histgen.tokenizer import Tokenizer
from milkit.model import Bags

D = 20
WORDS = ["carcinoma", "invasive", "grade", "benign", "margin", "tumour", "lymph", "node", "clear", "ductal"]
OPTS = dict(num_heads=4, topk=8, prototype_num=16, max_seq_length=14)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Annotation JSON + a random HistGen checkpoint whose vocabulary fits it (threshold 3)."""
    root = tmp_path_factory.mktemp("histgen")
    g = torch.Generator().manual_seed(0)
    reports = [". ".join(" ".join(WORDS[int(i)] for i in torch.randint(0, 10, (5,), generator=g)) for _ in range(2))
               for _ in range(30)]
    ann = {split: [{"id": f"{split}{i}", "report": r, "image_path": [], "split": split} for i, r in enumerate(rs)]
           for split, rs in (("train", reports[:20]), ("val", reports[20:25]), ("test", reports[25:]))}
    (root / "ann.json").write_text(json.dumps(ann))
    vocab = Tokenizer.build(reports[:20], threshold=3).vocab_size
    torch.manual_seed(1)
    ref = HistGenModel(small_args(max_seq_length=OPTS["max_seq_length"]), vocab, in_dim=D).eval()
    sd = ref.state_dict()
    torch.save({"epoch": 3, "state_dict": sd, "monitor_best": np.float64(0.25)}, root / "model_best.pth")
    return SimpleNamespace(root=root, ann=root / "ann.json", ckpt=root / "model_best.pth", ref=ref, sd=sd)


def test_import_writes_a_run_dir_that_reproduces_histgen(upstream, tmp_path: Path, registries) -> None:
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.runner import load_run

    run = import_histgen(upstream.ckpt, upstream.ann, tmp_path / "run", threshold=3, **OPTS)
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    assert recipe["aggregator"]["name"] == "histgen" and recipe["aggregator"]["variant"] == "faithful"
    assert recipe["head"]["name"] == "report" and recipe["head"]["keep_eos"] is False
    validate_recipe(load_recipe(run / "recipe.toml"), registries, check_files=False)
    assert json.loads((run / "fold_0/checkpoints/best.json").read_text())["source"] == "import-histgen"
    model, _ = load_run(run, registries)
    feats = torch.randn(1, 33, D)
    with torch.no_grad():
        ours = model.head.generate(model.encode(Bags(feats, torch.ones(1, 33, dtype=torch.bool), torch.zeros(1, 33, 2))))
        assert torch.equal(ours[0], upstream.ref.sample(feats, beam_size=3)[0])


def test_cli_import(upstream, tmp_path: Path) -> None:
    from milkit.cli import app

    args = ["import-histgen", str(upstream.ckpt), "--annotations", str(upstream.ann), "--out", str(tmp_path / "r"),
            "--threshold", "3", "--num-heads", "4", "--topk", "8", "--prototype-num", "16", "--max-seq-length", "14"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "fold_0" / "checkpoints" / "best.safetensors").is_file()


def test_vocabulary_size_mismatch_is_explained(upstream, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"encoder_decoder\.logit\.weight' has \d+ rows") as err:
        import_histgen(upstream.ckpt, upstream.ann, tmp_path / "run", threshold=40, **OPTS)
    assert "threshold 40" in str(err.value)


def _write(upstream, tmp_path: Path, sd: dict) -> Path:
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": sd}, path)
    return path


def test_missing_key_is_named(upstream, tmp_path: Path) -> None:
    key = "encoder_decoder.model.decoder.layers.1.src_attn.linears.2.weight"
    sd = {k: v for k, v in upstream.sd.items() if k != key}
    with pytest.raises(CheckpointError, match=f"missing key '{key}'"):
        import_histgen(_write(upstream, tmp_path, sd), upstream.ann, tmp_path / "run", threshold=3, **OPTS)


def test_wrong_shape_is_named(upstream, tmp_path: Path) -> None:
    key = "encoder_decoder.attn_mem.linears.0.weight"
    sd = {**upstream.sd, key: torch.zeros(32, 31)}
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape \(32, 31\), the model expects \(32, 32\)"):
        import_histgen(_write(upstream, tmp_path, sd), upstream.ann, tmp_path / "run", threshold=3, **OPTS)


def test_pickled_objects_are_refused_with_a_way_out(upstream, tmp_path: Path) -> None:
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": upstream.sd, "args": SimpleNamespace(topk=512)}, path)
    with pytest.raises(CheckpointError, match="weights_only=True") as err:
        import_histgen(path, upstream.ann, tmp_path / "run", threshold=3, **OPTS)
    assert "torch.save(ck['state_dict']" in str(err.value)
