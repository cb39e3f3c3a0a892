"""Report-generation metrics: pycocoevalcap BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, as HistGen uses them,
plus finding agreement and the REG2025 ranking score; :func:`report_metrics` is what report heads call.

Strings are scored as given (no PTB tokenisation): ``{i: [reference]}`` against
``{i: [generated]}``, one reference per sample, exactly like HistGen's ``compute_scores``.
METEOR runs pycocoevalcap's bundled ``meteor-1.5.jar`` and needs ``java`` on PATH; when it
cannot run, ``METEOR`` is ``None`` and ``meteor_unavailable_reason`` says why.
"""

import shutil
import threading
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from milkit.config import ComponentConfig
from milkit.errors import MilkitError
from milkit.metrics import findings, reg2025

BLEU_KEYS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4")
METRIC_KEYS = (*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr")
REASON_KEY = "meteor_unavailable_reason"


def _scorers() -> tuple[type, type, type, type]:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as exc:
        hint = "install it: pip install 'milkit[reports]'"
        raise MilkitError(f"report metrics need pycocoevalcap ({exc}); {hint}") from exc
    return Bleu, Meteor, Rouge, Cider


def _as_dicts(generated: list[str], references: list[str]) -> tuple[dict, dict]:
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    if not generated:
        raise ValueError("no reports to score")
    for kind, texts in (("generated", generated), ("reference", references)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"{kind} report {bad} is {type(texts[bad]).__name__}, not str")
    return {i: [r] for i, r in enumerate(references)}, {i: [g] for i, g in enumerate(generated)}


def _meteor_line(text: str) -> str:
    # The jar reads one line per request and splits fields on '|||': a newline or CR inside a report
    # would desynchronise the protocol and hang. METEOR's own -norm tokenisation makes this harmless.
    return text.replace("\r", " ").replace("\n", " ").replace("|||", " ")


def _close(scorer: Any) -> str:
    """Kill the jar, return its stderr, and leave pycocoevalcap's ``__del__`` nothing that can hang."""
    proc = scorer.meteor_p
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    err = proc.stderr.read().decode(errors="replace").strip()
    proc.stderr.close()
    scorer.lock = threading.Lock()  # compute_score may have died holding the old one
    return err


def meteor_score(gts: dict, res: dict, *, timeout_s: float = 600.0) -> tuple[float | None, str | None]:
    """Corpus METEOR from pycocoevalcap's ``Meteor`` (one JVM per call); ``(None, reason)`` on failure."""
    if shutil.which("java") is None:
        return None, "java was not found on PATH; install a Java runtime (e.g. openjdk-17-jre-headless) for METEOR"
    _, Meteor, _, _ = _scorers()
    gts = {k: [_meteor_line(t) for t in v] for k, v in gts.items()}
    res = {k: [_meteor_line(t) for t in v] for k, v in res.items()}
    try:
        scorer = Meteor()
    except OSError as exc:
        return None, f"could not start java for METEOR: {exc}"
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["score"] = float(scorer.compute_score(gts, res)[0])
        except Exception as exc:  # broken pipe, empty reply from a dead JVM, ...
            out["error"] = exc

    worker = threading.Thread(target=work, name="milkit-meteor", daemon=True)
    worker.start()
    worker.join(timeout_s)
    timed_out = worker.is_alive()
    stderr = _close(scorer)
    worker.join(5.0)
    if "score" in out:
        return out["score"], None
    tail = f"; java said: {stderr[-500:]}" if stderr else ""
    if timed_out:
        return None, f"the METEOR jar gave no answer within {timeout_s:g} s and was killed{tail}"
    return None, f"the METEOR jar failed ({type(out.get('error')).__name__}: {out.get('error')}){tail}"


def score_reports(
    generated: list[str], references: list[str], *, meteor: bool = True, meteor_timeout_s: float = 600.0
) -> dict[str, float | str | None]:
    """Corpus scores ``BLEU_1..4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` of generated vs reference reports.

    BLEU is corpus-level (clipped n-gram counts summed over samples, brevity penalty on the
    totals); METEOR is the jar's aggregate score; ROUGE-L (LCS F, beta=1.2) and CIDEr-D are
    means over samples. ``METEOR`` is ``None`` when disabled or when Java fails; then the key
    ``meteor_unavailable_reason`` (only present in that case) holds the reason.
    """
    Bleu, _, Rouge, Cider = _scorers()
    gts, res = _as_dicts(generated, references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out: dict[str, float | str | None] = {k: float(v) for k, v in zip(BLEU_KEYS, bleu, strict=True)}
    if meteor:
        out["METEOR"], reason = meteor_score(gts, res, timeout_s=meteor_timeout_s)
    else:
        out["METEOR"], reason = None, "METEOR was not requested"
    out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if reason is not None:
        out[REASON_KEY] = reason
    return out


def report_scores_per_sample(generated: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-report sentence BLEU-1..4 (pycocoevalcap's per-sample values) and ROUGE-L, in input order."""
    Bleu, _, Rouge, _ = _scorers()
    gts, res = _as_dicts(generated, references)
    _, bleu = Bleu(4).compute_score(gts, res, verbose=0)
    _, rouge = Rouge().compute_score(gts, res)
    return [
        {**{k: float(bleu[n][i]) for n, k in enumerate(BLEU_KEYS)}, "ROUGE_L": float(rouge[i])}
        for i in range(len(generated))
    ]


class ReportMetricsConfig(ComponentConfig):
    """The report-metric keys every report head shares: inherit it into the head's ``Config``
    (``class MyConfig(ReportMetricsConfig): ...``) and pass ``self.config`` to :func:`report_metrics`."""

    findings_vocabulary: str = Field(
        "tcga", description="Finding-agreement vocabulary: 'demo', 'tcga' (shipped), the path of a TOML file, "
                            "or 'none' (docs/report-metrics.md).")
    reg2025_keyword_model: str = Field(
        reg2025.DEFAULT_KEYWORD_MODEL, description="spaCy/scispaCy model for REG2025's KEY: an installed package "
                                                   "name or a model folder ('none': off; never downloaded).")
    reg2025_embedding_model: str = Field(
        reg2025.DEFAULT_EMBEDDING_MODEL, description="transformers model for REG2025's EMB: a model folder or a "
                                                     "hub id already in the HF cache ('none': off; never downloaded).")

    @field_validator("findings_vocabulary")
    @classmethod
    def _vocabulary_form(cls, value: str) -> str:
        return findings.check_spec(value)


def report_row_problems(config: ReportMetricsConfig, rows: list[dict[str, Any]], column: str) -> list[str]:
    """A report head's ``check_rows``: :func:`report_metric_problems` plus the slides whose ``column``
    holds no report text."""
    problems = report_metric_problems(config)
    bad = [str(r.get("slide_id", "?")) for r in rows if not isinstance(r.get(column), str) or not r[column].strip()]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        problems.append(f"column '{column}' is empty for slide(s) {', '.join(bad[:5])}{more}: every slide needs a "
                        "report")
    return problems


def report_metric_problems(config: ReportMetricsConfig) -> list[str]:
    """Problems with the metric settings that show before training (an unreadable vocabulary); [] if fine.

    Report heads return these from ``check_rows`` so a bad vocabulary fails the run at its start.
    """
    if config.findings_vocabulary == findings.DISABLED:
        return []
    try:
        findings.load_vocabulary(config.findings_vocabulary)
    except findings.VocabularyError as exc:
        return [f"findings_vocabulary: {exc}"]
    return []


def finding_metrics(generated: list[str], references: list[str], vocabulary: str) -> dict[str, Any]:
    """:func:`milkit.metrics.findings.finding_agreement` with the vocabulary named by a config value;
    ``{}`` for ``'none'``, ``findings_unavailable_reason`` when it cannot be read."""
    if vocabulary == findings.DISABLED:
        return {}
    try:
        vocab = findings.load_vocabulary(vocabulary)
    except findings.VocabularyError as exc:
        return {"findings_unavailable_reason": str(exc)}
    return findings.finding_agreement(generated, references, vocab)


def reg2025_metrics(generated: list[str], references: list[str], config: ReportMetricsConfig) -> dict[str, Any]:
    """The REG2025 ranking score with the KEY/EMB models ``config`` names (loaded once, cached)."""
    return reg2025.reg2025_score(generated, references,
                                 keywords=reg2025.spacy_keywords(config.reg2025_keyword_model),
                                 embedder=reg2025.transformer_embedder(config.reg2025_embedding_model))


def report_metrics(
    generated: list[str],
    references: list[str],
    config: ReportMetricsConfig | None = None,
    *,
    protocols: Mapping[str, list[str]] | None = None,
    meteor: bool = True,
    reg2025_score: bool = True,
) -> dict[str, Any]:
    """Every report metric of generated reports against their references: the one call report heads make.

    Args:
        generated, references: one string each per report, in the same order. Pass the references
            as the head's default protocol wants them (milkit: the original report, cleaned).
        config: the findings vocabulary and the REG2025 models (default: ``ReportMetricsConfig()``).
        protocols: label -> other references for the same reports, e.g. ``{"histgen_protocol":
            references decoded from the truncated vocabulary}``; the pycocoevalcap scores against each
            are added as ``<label>_BLEU_4``... (finding agreement and REG2025 use ``references`` only).
        meteor: run METEOR (a JVM start per reference set).
        reg2025_score: compute REG2025 (loads its models on first use).

    Returns:
        ``BLEU_1..4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` (:func:`score_reports`), the ``finding_*``
        and ``findings_*`` keys (:func:`finding_metrics`), the ``REG2025*`` keys
        (:func:`milkit.metrics.reg2025.reg2025_score`) and each protocol's prefixed scores. Parts that
        cannot be computed are None, with a ``*_reason`` key saying why.
    """
    config = config if config is not None else ReportMetricsConfig()
    out: dict[str, Any] = dict(score_reports(generated, references, meteor=meteor))
    for label, refs in (protocols or {}).items():
        out.update({f"{label}_{k}": v for k, v in score_reports(generated, refs, meteor=meteor).items()})
    out.update(finding_metrics(generated, references, config.findings_vocabulary))
    if reg2025_score:
        out.update(reg2025_metrics(generated, references, config))
    return out


VALIDATION_FINDING_KEYS = ("findings_accuracy", "findings_macro_f1")
"""The finding-agreement keys of :func:`report_validation_metrics` (the per-field ones stay out of the
per-epoch log)."""


def report_validation_metrics(generated: list[str], references: list[str],
                              config: ReportMetricsConfig | None = None) -> dict[str, Any]:
    """The cheap subset for per-epoch validation (a head's ``validation_metrics``): BLEU, ROUGE-L and
    CIDEr without METEOR, and the overall finding agreement; no REG2025, no protocols."""
    out = report_metrics(generated, references, config, meteor=False, reg2025_score=False)
    return {k: v for k, v in out.items()
            if not k.startswith(("finding", "METEOR", "meteor")) or k in VALIDATION_FINDING_KEYS}
