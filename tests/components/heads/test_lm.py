"""The `lm` report head: loss masking, padding invariance, decoding (greedy/beam/KV cache), LoRA and frozen
training, checkpoints (a frozen folder LM left out of them), and a run of recipes/report_lm.toml."""

import csv
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch

pytest.importorskip("transformers", reason="the lm head needs milkit[lm]")
pytest.importorskip("peft", reason="the lm head needs milkit[lm]")

import milkit.metrics.reports  # noqa: E402
from milkit.aggregator import AggregatorOutput  # noqa: E402
from milkit.checkpoint import load_weights, save_weights  # noqa: E402
from milkit.components.heads import lm_model  # noqa: E402
from milkit.components.heads.lm import LMConfig, LMReport  # noqa: E402
from milkit.errors import CheckpointError, MilkitError  # noqa: E402
from milkit.testing import check_head  # noqa: E402
from milkit.testing.synthetic import pad_tokens, synthetic_output, synthetic_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
E = 16


@pytest.fixture
def no_meteor(monkeypatch: pytest.MonkeyPatch) -> None:
    real = milkit.metrics.reports.score_reports
    monkeypatch.setattr(milkit.metrics.reports, "score_reports", lambda g, r, meteor=True: real(g, r, meteor=False))


def _rows(n: int = 4) -> list[dict]:
    return synthetic_rows(n, torch.Generator().manual_seed(0))


def _head(rows: list[dict] | None = None, seed: int = 0, **config) -> LMReport:
    cfg = LMConfig(**{"max_new_tokens": 12, "tune": "full", **config})
    state = LMReport.fit_targets(cfg, rows or _rows())
    torch.manual_seed(seed)
    return LMReport(cfg, in_dim=E, target_state=state).eval()


def _x(batch: int = 4, seed: int = 1) -> AggregatorOutput:
    x = synthetic_output(batch, E, torch.Generator().manual_seed(seed), tokens=True)
    return AggregatorOutput(x.embedding.detach(), x.attention, x.tokens.detach(), x.token_mask)


def _trained(head: LMReport, rows: list[dict], x: AggregatorOutput, steps: int = 8) -> LMReport:
    """A few Adam steps, so that every trained tensor (LoRA's B included) moves off its initial value."""
    opt = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=1e-2)
    targets = head.collate_targets(rows)
    head.train()
    for _ in range(steps):
        opt.zero_grad()
        head.loss(head(x, targets), targets).backward()
        opt.step()
    return head.eval()


def test_loss_is_the_report_tokens_only_with_prefix_and_prompt_labelled_minus_100() -> None:
    rows, x = _rows(), _x()
    head = _head(rows)
    targets = head.collate_targets(rows)
    ids, mask = targets["ids"], targets["mask"]                            # b r
    left, left_mask = head.prefix(x)                                       # b k h
    k = left.shape[1]
    assert k > len(head.prompt_ids) and not left_mask.all()               # padded prefix rows + the prompt
    # the whole sequence with transformers' own shifted loss: prefix and prompt are label -100
    embeds = torch.cat((left, head.lm.get_input_embeddings()(ids)), 1)     # b k+r h
    full_mask = torch.cat((left_mask, mask), 1)
    labels = torch.cat((torch.full((len(rows), k), -100), ids.masked_fill(~mask, -100)), 1)
    positions = (full_mask.long().cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        out = head.lm(inputs_embeds=embeds, attention_mask=full_mask.long(), position_ids=positions, labels=labels)
        ours = head.loss(head(x, targets), targets)
        # by hand: -log p of each real report token (EOS included) given everything before it
        logp = out.logits[:, k - 1:-1].log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)  # b r
        by_hand = -(logp * mask).sum() / mask.sum()
    assert mask.sum() == sum(len(head.encode_report(r["report"])[0]) for r in rows)
    assert torch.allclose(ours, out.loss, atol=1e-5) and torch.allclose(ours, by_hand, atol=1e-5)
    assert (ids[mask.sum(1) > 0, mask.sum(1) - 1] == head.eos_id).all()  # every target ends with EOS


def test_generated_text_ignores_padded_tokens_and_batch_neighbours() -> None:
    rows, x = _rows(), _x()
    head = _head(rows, tune="full")
    for mode in ("greedy", "beam"):
        with head.decoding_mode(mode), torch.no_grad():
            texts = [r["generated"] for r in head.predict(x, rows)]
            padded = [r["generated"] for r in head.predict(pad_tokens(x, 3, torch.Generator().manual_seed(2)), rows)]
            alone = [head.predict(AggregatorOutput(x.embedding[i:i + 1], None, x.tokens[i:i + 1],
                                                   x.token_mask[i:i + 1]), rows[i:i + 1])[0]["generated"]
                     for i in range(len(rows))]
        assert texts == padded == alone and any(texts), mode


def test_greedy_equals_beam_search_with_one_beam() -> None:
    rows, x = _rows(), _x()
    head = _head(rows, decoding="beam", beam_size=1)
    with torch.no_grad():
        assert head.generate(x, "greedy") == head.generate(x)
        head.config = head.config.model_copy(update={"beam_size": 3})
        wide = head.generate(x)
    assert all(len(s) <= head.config.max_new_tokens for s in wide)


def test_kv_cache_generation_equals_a_greedy_loop_without_cache() -> None:
    rows, x = _rows(), _x()
    head = _trained(_head(rows, max_new_tokens=64), rows, x, steps=30)  # ends some reports with EOS, not all
    with torch.no_grad():
        cached = head.generate(x, "greedy")
        embeds, mask = head.prefix(x)                                      # b k h
        emb = head.lm.get_input_embeddings()
        steps, done = [], torch.zeros(len(rows), dtype=torch.bool)
        for _ in range(head.config.max_new_tokens):
            positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
            logits = head.lm(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions,
                             use_cache=False).logits[:, -1]                # b v: the whole sequence every step
            nxt = torch.where(done, head.pad_id, logits.argmax(-1))
            steps.append(nxt)
            done |= nxt == head.eos_id
            embeds = torch.cat((embeds, emb(nxt)[:, None]), 1)
            mask = torch.cat((mask, torch.ones(len(rows), 1, dtype=torch.bool)), 1)
    loop = torch.stack(steps, 1).tolist()
    expected = [s[: s.index(head.eos_id)] if head.eos_id in s else s for s in loop]
    assert cached == expected
    assert len({len(s) for s in cached}) > 1 and len({tuple(s) for s in cached}) > 1  # EOS reached, rows differ


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_lora_trains_only_adapters_and_the_aligner(model: str) -> None:
    rows, x = _rows(), _x()
    head = _head(rows, model=model, tune="lora", lora_r=2)
    trainable = [n for n, p in head.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("aligner.") or ".lora_" in n for n in trainable)
    assert any(".lora_A." in n for n in trainable) and any(n.startswith("aligner.") for n in trainable)
    targets = head.collate_targets(rows)
    head.train()
    head.loss(head(x, targets), targets).backward()
    for n, p in head.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    frozen = _head(rows, model=model, tune="frozen", aligner="resampler", num_prefix_tokens=3).train()
    assert all(n.startswith("aligner.") for n, p in frozen.named_parameters() if p.requires_grad)
    assert not frozen.lm.training and frozen.aligner.training              # a frozen LM keeps dropout off
    frozen.loss(frozen(x, targets), targets).backward()
    assert all(p.grad is None for p in frozen.lm.parameters())


def test_checkpoint_round_trip_gives_identical_generations(tmp_path: Path) -> None:
    rows, x = _rows(), _x()
    head = _trained(_head(rows, tune="lora", lora_r=2), rows, x)
    save_weights(head, tmp_path / "head.safetensors")
    fresh = _head(rows, seed=7, tune="lora", lora_r=2)
    with torch.no_grad():
        assert fresh.generate(x, "greedy") != head.generate(x, "greedy")
        load_weights(fresh, tmp_path / "head.safetensors")
        for mode in ("greedy", "beam"):
            assert fresh.generate(x, mode) == head.generate(x, mode)


def _save_folder_lm(path: Path, rows: list[dict]) -> None:
    """A 'pretrained' LM folder as save_pretrained writes one: config, weights, tokenizer."""
    tok = lm_model.load_tokenizer("tiny-gpt2", lm_model.train_tokenizer([r["report"] for r in rows], 300))
    torch.manual_seed(3)
    lm = lm_model.build_lm("tiny-gpt2", tok, pretrained=False)
    lm.save_pretrained(path)
    tok.save_pretrained(path)


def test_a_frozen_folder_lm_is_not_copied_into_checkpoints(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    rows, x = _rows(), _x()
    folder = tmp_path / "lm"
    _save_folder_lm(folder, rows)
    head = _trained(_head(rows, model=folder, tune="lora", lora_r=2), rows, x)
    ckpt = tmp_path / "head.safetensors"
    save_weights(head, ckpt)
    keys = set(load_file(str(ckpt)))
    assert keys and all(k.startswith("aligner.") or ".lora_" in k or k == "lm_fingerprint" for k in keys)
    assert ckpt.stat().st_size < (folder / "model.safetensors").stat().st_size / 4
    fresh = _head(rows, seed=9, model=folder, tune="lora", lora_r=2)
    load_weights(fresh, ckpt)
    with torch.no_grad():
        assert fresh.generate(x, "beam") == head.generate(x, "beam")
    full = _head(rows, model=folder, tune="full")                          # a tuned LM is saved whole
    assert any(k.startswith("lm.transformer.") for k in full.state_dict())
    # the folder's weights change: the checkpoint no longer fits and says why
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        lm.transformer.h[0].mlp.c_fc.weight.add_(0.1)
    lm.save_pretrained(folder)
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_weights(_head(rows, model=folder, tune="lora", lora_r=2), ckpt)


def test_config_errors_name_the_key_and_the_choices(tmp_path: Path) -> None:
    with pytest.raises(MilkitError, match="tiny-gpt2"):
        _head(model=tmp_path / "nowhere")
    with pytest.raises(MilkitError, match="c_attn"):
        _head(tune="lora", lora_target_modules=["no_such_module"])
    with pytest.raises(ValueError, match="resampler_heads"):
        _head(aligner="resampler", resampler_heads=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        _head(max_new_tokens=2000).generate(_x())


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)                         # import peft -> ImportError
    with pytest.raises(MilkitError, match=r"pip install 'milkit\[lm\]'"):
        _head(tune="lora")
    _head(tune="full")                                                     # peft is only needed for LoRA


def test_conformance(no_meteor: None) -> None:
    off = {"reg2025_keyword_model": "none", "reg2025_embedding_model": "none"}  # never load the REG2025 models
    check_head(LMReport, {"max_new_tokens": 8, "aligner": "resampler", "num_prefix_tokens": 3, "model": "tiny-qwen2",
                          **off})
    check_head(LMReport, {"max_new_tokens": 8, "tune": "frozen", "model": "tiny-biogpt", "decoding": "sample",
                          "top_p": 0.9, "temperature": 0.7, "prompt": "", **off})


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from milkit.demo import make_demo_cohort

    return make_demo_cohort(tmp_path_factory.mktemp("demo"), n_slides=18, seed=3, slide_size=1024, workers=1,
                            progress=False)


@pytest.mark.slow
def test_the_shipped_recipe_runs_and_generate_reproduces_its_reports(small_demo: Path, tmp_path: Path,
                                                                   no_meteor: None) -> None:
    from typer.testing import CliRunner

    from milkit.cli import make_app
    from milkit.plugins import get_plugin_manager

    recipe = tomllib.loads((REPO / "recipes" / "report_lm.toml").read_text())
    recipe["cohort"] = {"csv": str(small_demo), "splits": "holdout", "val_fraction": 0.2, "test_fraction": 0.25}
    recipe["train"]["epochs"] = 2
    recipe["head"].update(max_new_tokens=24, decoding="greedy", reg2025_keyword_model="none",
                          reg2025_embedding_model="none")
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(recipe))
    app = make_app(get_plugin_manager(autoload=False))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    test = [p for p in csv.DictReader((run_dir / "predictions.csv").open()) if p["split"] == "test"]
    assert test and all(p["reference"] for p in test)
    features = small_demo.parent / "features" / "color-texture"
    files = [str(features / f"{p['slide_id']}.h5") for p in test]
    out = tmp_path / "reports.csv"
    result = CliRunner().invoke(app, ["generate", str(run_dir), *sum((["--features", f] for f in files), []),
                                      "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    generated = {r["slide_id"]: r["report"] for r in csv.DictReader(out.open())}
    assert generated == {p["slide_id"]: p["generated"] for p in test}
