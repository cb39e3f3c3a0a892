"""The ``report`` head: targets, loss, truncation, predictions, metrics, memory sharing."""

import json

import pytest
import torch
from _histgen_helpers import IN_DIM, SMALL_HEAD, pad, small_model

import milkit.metrics.reports
from milkit.aggregator import AggregatorOutput
from milkit.head import HeadOutput
from milkit.histgen.report_head import Report, ReportConfig
from milkit.testing.head import check_head

ROWS = [{"slide_id": f"s{i}", "report": text} for i, text in enumerate([
    "Invasive carcinoma, grade 2. Margins clear.",
    "Benign tissue. No carcinoma.",
    "Invasive carcinoma. Margins involved.",
] * 4)]
LONG = {"slide_id": "long", "report": "carcinoma " * 30}


def _head(**kw) -> Report:
    cfg = ReportConfig(**{**SMALL_HEAD, "threshold": 2, "max_seq_length": 12, **kw})
    return Report(cfg, in_dim=16, target_state=Report.fit_targets(cfg, ROWS + [LONG]))


def test_vocabulary_comes_from_the_training_rows_only() -> None:
    cfg = ReportConfig(threshold=2, max_seq_length=12)
    state = Report.fit_targets(cfg, ROWS + [LONG])
    json.dumps(state)                                                  # JSON-able
    vocab = state["tokenizer"]["vocab"]
    assert "carcinoma" in vocab and "benign" in vocab and "<unk>" in vocab
    assert state["max_seq_length"] == 12 and state["n_truncated_train"] == 1


def test_truncation_keeps_eos_unless_faithful() -> None:
    fixed, faithful = _head(), _head(keep_eos=False)
    ids, cut = fixed.encode_report(LONG["report"])
    assert len(ids) == 12 and ids[0] == 0 and ids[-1] == 0 and cut
    ids, cut = faithful.encode_report(LONG["report"])
    assert len(ids) == 12 and ids[-1] != 0 and cut                    # HistGen: EOS lost
    assert fixed.encode_report("Benign tissue.") == (faithful.encode_report("Benign tissue.")[0], False)


def test_loss_is_the_masked_mean_token_nll() -> None:
    head = _head()
    t = head.collate_targets([ROWS[1], LONG])
    assert t["ids"].shape == (2, 12) and t["lengths"].tolist() == [len(head.encode_report(ROWS[1]["report"])[0]), 12]
    lp = torch.log_softmax(torch.randn(2, 11, head.tokenizer.vocab_size + 1), -1)
    loss = head.loss(HeadOutput({"logprobs": lp}), t)
    terms = [-lp[b, i, t["ids"][b, i + 1]] for b in range(2) for i in range(int(t["lengths"][b]) - 1)]
    assert torch.isclose(loss, torch.stack(terms).mean())


def test_empty_reports_are_reported_by_slide() -> None:
    problems = Report.check_rows(ReportConfig(), [{"slide_id": "a", "report": " "}, {"slide_id": "b"},
                                                  {"slide_id": "c", "report": "ok"}])
    assert len(problems) == 1 and "a, b" in problems[0]


def test_predict_records_and_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model("fixed")
    head = model.head
    head.target_state["most_common_report"] = "w03 w04"  # fit_targets records it; imported runs may lack it
    rows = [{"slide_id": "x", "report": "W03 w04."}, {"slide_id": "y", "report": "w05 " * 40}]
    with torch.no_grad():
        x = model.encode(pad([torch.randn(5, IN_DIM), torch.randn(9, IN_DIM)]))
        with head.decoding_mode("greedy"):
            greedy = head.predict(x, rows)
        beam = head.predict(x, rows)
    assert [r["slide_id"] for r in beam] == ["x", "y"]
    # the default reference is the whole original report, cleaned; HistGen's is decoded from the cut ids
    assert beam[0]["reference"] == "w03 w04 ." and beam[0]["reference_histgen"] == "w03 w04 <unk>"
    assert greedy[1]["reference"].split() == ["w05"] * 40 + ["."]  # the cleaner ends every report with " ."
    assert greedy[1]["reference_histgen"].split() == ["w05"] * (SMALL_HEAD["max_seq_length"] - 2)
    assert greedy[1]["truncated"] and not greedy[0]["truncated"]
    calls = []
    monkeypatch.setattr(milkit.metrics.reports, "score_reports",
                        lambda g, r, meteor=True: calls.append((g, r, meteor)) or {"BLEU_4": 0.5})
    scores = head.metrics(beam)
    assert {k: scores[k] for k in ("BLEU_4", "histgen_protocol_BLEU_4", "n_truncated", "baseline_BLEU_4")} == {
        "BLEU_4": 0.5, "histgen_protocol_BLEU_4": 0.5, "n_truncated": 1, "baseline_BLEU_4": 0.5}
    assert scores["findings_vocabulary"] == "tcga" and "REG2025" in scores and "REG2025_unavailable_reason" in scores
    (gen, refs, meteor), (_, hist_refs, hist_meteor), (base, base_refs, base_meteor) = calls
    assert refs == base_refs == [r["reference"] for r in beam] and meteor and hist_meteor and not base_meteor
    assert hist_refs == [r["reference_histgen"] for r in beam]
    assert base == [head.target_state["most_common_report"]] * len(beam)  # the always-the-same-report baseline
    calls.clear()
    with head.validation():  # per-epoch model selection decodes greedily
        assert head._decoding == head.config.val_decoding
    assert head._decoding is None
    cheap = head.validation_metrics(beam)  # no METEOR JVM, no REG2025 models, no HistGen protocol, no baseline
    assert cheap["BLEU_4"] == 0.5 and cheap["n_truncated"] == 1 and "findings_macro_f1" in cheap
    assert not any(k.startswith(("REG2025", "histgen_protocol", "baseline", "finding_", "METEOR")) for k in cheap)
    assert [c[2] for c in calls] == [False]
    calls.clear()
    with head.validation():  # no hidden mode: metrics() is the full set wherever it is called
        assert head.metrics(beam).keys() == scores.keys()
    assert [c[2] for c in calls] == [True, True, False]


def test_a_bad_findings_vocabulary_fails_before_training(tmp_path) -> None:
    problems = Report.check_rows(ReportConfig(findings_vocabulary=str(tmp_path / "v.toml")), ROWS)
    assert len(problems) == 1 and problems[0].startswith("findings_vocabulary:") and "no such file" in problems[0]
    assert Report.check_rows(ReportConfig(findings_vocabulary="demo"), ROWS) == []


def test_the_memory_is_shared_with_the_aggregator() -> None:
    model = small_model("fixed")
    assert model.head.decoder.cmn is model.aggregator.cmn
    names = {n for n, _ in model.named_parameters()}
    assert "aggregator.cmn.memory" in names and "head.decoder.cmn.memory" not in names   # counted once


def test_other_token_widths_get_their_own_memory_and_a_projection() -> None:
    head = _head(d_model=16)
    head_wide = Report(head.config, in_dim=24, target_state=head.target_state)
    tokens = torch.randn(2, 3, 24)
    out = head_wide(AggregatorOutput(torch.randn(2, 24), None, tokens, torch.ones(2, 3, dtype=torch.bool)),
                    head_wide.collate_targets(ROWS[:2]))
    assert out.values["logprobs"].shape[:2] == (2, head_wide.collate_targets(ROWS[:2])["ids"].shape[1] - 1)
    with pytest.raises(ValueError, match="predict"):
        head(AggregatorOutput(torch.randn(2, 16), None, torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)))


def test_head_conformance(monkeypatch: pytest.MonkeyPatch) -> None:
    real = milkit.metrics.reports.score_reports
    monkeypatch.setattr(milkit.metrics.reports, "score_reports", lambda g, r, meteor=True: real(g, r, meteor=False))  # no JVM
    check_head(Report, {**SMALL_HEAD, "threshold": 1, "max_seq_length": 10, "reg2025_keyword_model": "none",
                        "reg2025_embedding_model": "none"})
