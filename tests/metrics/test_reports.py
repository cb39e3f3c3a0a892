"""Report metrics: pycocoevalcap semantics (corpus BLEU, mean ROUGE-L, CIDEr-D), METEOR's failure modes, and
``report_metrics``, the one call report heads make."""

import math
import shutil

import pydantic
import pytest

from milkit.metrics import reports
from milkit.metrics.reports import (
    METRIC_KEYS,
    REASON_KEY,
    ReportMetricsConfig,
    report_metric_problems,
    report_metrics,
    report_scores_per_sample,
    report_validation_metrics,
    score_reports,
)

GEN = ["the cat sat on the mat", "a b"]
REF = ["the cat is on the mat", "a b c"]


def test_bleu_is_corpus_level_with_brevity_penalty() -> None:
    # Clipped matches / candidate n-grams summed over both samples, counted by hand.
    matches, totals = [7, 4, 1, 0], [8, 6, 4, 3]
    c, r = 8, 9
    bp = math.exp(1 - 1 / ((c + 1e-15) / (r + 1e-9)))
    p = [(m + 1e-15) / (t + 1e-9) for m, t in zip(matches, totals, strict=True)]
    out = score_reports(GEN, REF, meteor=False)
    for n in range(1, 5):
        assert out[f"BLEU_{n}"] == pytest.approx(bp * math.prod(p[:n]) ** (1 / n), rel=1e-9)


def test_rouge_l_is_mean_lcs_f_with_beta_1_2() -> None:
    def f(lcs: int, n_cand: int, n_ref: int) -> float:
        prec, rec = lcs / n_cand, lcs / n_ref
        return (1 + 1.2**2) * prec * rec / (rec + 1.2**2 * prec)

    out = score_reports(GEN, REF, meteor=False)
    assert out["ROUGE_L"] == pytest.approx((f(5, 6, 6) + f(2, 2, 3)) / 2, rel=1e-12)


def test_identical_reports_score_top_and_keys_are_stable() -> None:
    texts = ["invasive ductal carcinoma grade 2 .", "benign prostate tissue ."]
    out = score_reports(texts, texts, meteor=False)
    assert list(out) == [*METRIC_KEYS, REASON_KEY]
    assert out["METEOR"] is None and "not requested" in out[REASON_KEY]
    assert out["CIDEr"] == pytest.approx(10.0)  # CIDEr-D of a perfect match is 10 (x10 scaling)
    assert out["ROUGE_L"] == 1.0 and all(out[f"BLEU_{n}"] == pytest.approx(1.0) for n in range(1, 5))


def test_per_sample_scores_match_corpus_rouge_and_are_in_order() -> None:
    rows = report_scores_per_sample(GEN + ["x y z w"], REF + ["x y z w"])
    assert [set(r) for r in rows] == [{"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L"}] * 3
    assert rows[2]["BLEU_4"] == pytest.approx(1.0) and rows[2]["ROUGE_L"] == 1.0
    assert rows[1]["BLEU_1"] == pytest.approx(math.exp(1 - 3 / 2))  # 2/2 unigrams, brevity penalty
    corpus = score_reports(GEN + ["x y z w"], REF + ["x y z w"], meteor=False)
    assert sum(r["ROUGE_L"] for r in rows) / 3 == pytest.approx(corpus["ROUGE_L"], rel=1e-12)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="2 generated reports but 1"):
        score_reports(["a", "b"], ["a"], meteor=False)
    with pytest.raises(ValueError, match="no reports"):
        score_reports([], [], meteor=False)
    with pytest.raises(ValueError, match="reference report 1 is float"):
        score_reports(["a", "b"], ["a", float("nan")], meteor=False)


def test_meteor_without_java_is_none_with_reason(monkeypatch) -> None:
    monkeypatch.setattr(reports.shutil, "which", lambda name: None)
    out = score_reports(GEN, REF)
    assert out["METEOR"] is None and "java was not found" in out[REASON_KEY]
    assert out["BLEU_1"] == score_reports(GEN, REF, meteor=False)["BLEU_1"]


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java is not installed")


@needs_java
def test_meteor_broken_jar_reports_java_error(monkeypatch) -> None:
    import pycocoevalcap.meteor.meteor as pm

    monkeypatch.setattr(pm, "METEOR_JAR", "no-such-meteor.jar")
    out = score_reports(GEN, REF)
    assert out["METEOR"] is None
    assert "METEOR jar failed" in out[REASON_KEY] and "no-such-meteor.jar" in out[REASON_KEY]
    assert out["ROUGE_L"] is not None


@needs_java
def test_meteor_timeout_kills_the_jvm() -> None:
    value, reason = reports.meteor_score({0: ["a b"]}, {0: ["a b"]}, timeout_s=0.01)
    assert value is None and "no answer within 0.01 s" in reason


@needs_java
@pytest.mark.slow
def test_meteor_survives_odd_strings() -> None:
    """Newlines, CRs, '|||', non-ASCII and empty strings must neither hang nor desynchronise the jar."""
    gen = ["", "tumour 2.5\ncm ||| x", "é µm grade", "benign tissue ."]
    ref = ["benign", "tumour 2.5 cm\r\nx", "é µm grade", "benign tissue ."]
    odd = score_reports(gen, ref, meteor_timeout_s=120)
    assert REASON_KEY not in odd and 0.0 < odd["METEOR"] < 1.0


# --- report_metrics: what every report head calls ------------------------------------------------------

OFF = ReportMetricsConfig(findings_vocabulary="demo", reg2025_keyword_model="none", reg2025_embedding_model="none")


def test_report_metrics_joins_ngram_findings_reg2025_and_protocols() -> None:
    gen = ["invasive adenocarcinoma with acinar pattern . lymphovascular invasion is present ."]
    ref = ["invasive adenocarcinoma with acinar pattern . lymphovascular invasion is not identified ."]
    out = report_metrics(gen, ref, OFF, protocols={"histgen_protocol": ["invasive adenocarcinoma <unk> ."]},
                         meteor=False)
    assert {k: out[k] for k in ("BLEU_4", "ROUGE_L")} == {k: score_reports(gen, ref, meteor=False)[k]
                                                          for k in ("BLEU_4", "ROUGE_L")}
    histgen = score_reports(gen, ["invasive adenocarcinoma <unk> ."], meteor=False)
    assert out["histgen_protocol_BLEU_1"] == histgen["BLEU_1"] and "histgen_protocol_meteor_unavailable_reason" in out
    assert out["finding_subtype_accuracy"] == 1.0 and out["finding_lymphovascular_invasion_accuracy"] == 0.0
    assert out["findings_vocabulary"] == "demo"
    # REG2025: the models are off, so the score is None with the reasons; the n-gram parts are still there
    assert out["REG2025"] is None and out["REG2025_ROUGE"] is not None
    reason = out["REG2025_unavailable_reason"]
    assert "KEY is disabled" in reason and "EMB is disabled" in reason
    cheap = report_metrics(gen, ref, OFF, meteor=False, reg2025_score=False)
    assert not any(k.startswith("REG2025") for k in cheap) and "finding_subtype_accuracy" in cheap
    # per-epoch validation: the n-gram scores without METEOR and the overall finding agreement only
    val = report_validation_metrics(gen, ref, OFF)
    assert set(val) == {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr", "findings_accuracy",
                        "findings_macro_f1"}
    assert val["findings_macro_f1"] == out["findings_macro_f1"]


def test_report_metric_settings_are_checked() -> None:
    with pytest.raises(pydantic.ValidationError, match="findings_vocabulary must be one of"):
        ReportMetricsConfig(findings_vocabulary="tgca")
    missing = ReportMetricsConfig(findings_vocabulary="absent/vocab.toml")
    assert report_metric_problems(missing)[0].startswith("findings_vocabulary: findings vocabulary 'absent/vocab.toml'")
    assert report_metric_problems(ReportMetricsConfig()) == [] == report_metric_problems(OFF)
    out = report_metrics(["a"], ["a"], missing, meteor=False, reg2025_score=False)
    assert "no such file" in out["findings_unavailable_reason"]   # at metrics time: a reason, not a crash
    none = report_metrics(["a"], ["a"], OFF.model_copy(update={"findings_vocabulary": "none"}), meteor=False,
                          reg2025_score=False)
    assert not any(k.startswith("finding") for k in none)
