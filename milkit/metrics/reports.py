"""Report-generation metrics: pycocoevalcap BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, as HistGen uses them.

Strings are scored as given (no PTB tokenisation): ``{i: [reference]}`` against
``{i: [generated]}``, one reference per sample, exactly like HistGen's ``compute_scores``.
METEOR runs pycocoevalcap's bundled ``meteor-1.5.jar`` and needs ``java`` on PATH; when it
cannot run, ``METEOR`` is ``None`` and ``meteor_unavailable_reason`` says why.
"""

import shutil
import threading
from typing import Any

from milkit.errors import MilkitError

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
