"""The REG2025 challenge's ranking score for generated pathology reports.

``ranking = 0.15 * (ROUGE + BLEU) + 0.4 * KEY + 0.3 * EMB``, computed per report and then averaged
over the reports (https://reg2025.grand-challenge.org/submission-evaluation, "Evaluation Metric").
Each part follows the challenge's evaluation code (``metric/eval.py``, class ``REG_Evaluator``),
quirks included:

* ``BLEU`` is not BLEU-4: it is the 4-gram precision of the report against the reference, words
  split on whitespace, case kept, no brevity penalty; each occurrence of a 4-gram adds
  ``min(count in report, count in reference)``, so a repeated 4-gram is counted once per repeat
  (the value can exceed 1); 0 for a report of under 4 words.
* ``ROUGE`` is ROUGE-L F1 (beta = 1) on lower-cased whitespace tokens.
* ``KEY`` is the Jaccard similarity of the two sets of named entities found by a spaCy/scispaCy
  model (``en_core_sci_lg`` in the challenge), entity texts of >= 3 characters, lower-cased; 0 when
  both sets are empty.
* ``EMB`` is the cosine similarity of mean-pooled last hidden states (all tokens, [CLS]/[SEP]
  included, truncated to 512) of a pretrained language model (``dmis-lab/biobert-v1.1`` is the
  code's default); a cosine above 0.5 is rescaled to ``(cos - 0.5) / 0.5``, one at or below 0.5
  is kept as it is (so 0.5 scores 0.5 and 0.51 scores 0.02, as in the challenge's code).
* Pairs whose reference is the empty string are skipped, as the challenge's ``evaluate`` does.

KEY and EMB need models milkit never downloads; when one cannot be loaded its part is None, the
ranking score is None and ``REG2025_unavailable_reason`` says why: the score is never computed
from a subset of its parts.
"""

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS = {"ROUGE": 0.15, "BLEU": 0.15, "KEY": 0.4, "EMB": 0.3}
"""The challenge's weights ("determined based on consultation with clinical experts")."""
EMB_SCALE = 0.5
MIN_KEYWORD_CHARS = 3
MAX_TOKENS = 512
DISABLED = "none"
"""The model setting that turns KEY or EMB off (the ranking score is then None)."""
DEFAULT_KEYWORD_MODEL = "en_core_sci_lg"
DEFAULT_EMBEDDING_MODEL = "dmis-lab/biobert-v1.1"

KeywordExtractor = Callable[[Sequence[str]], list[set[str]]]
"""Texts -> one keyword set per text."""
Embedder = Callable[[Sequence[str]], np.ndarray]
"""Texts -> embeddings ``[n, d]``."""


@dataclass(frozen=True)
class Unavailable:
    """A part of the score that cannot be computed, and why."""

    reason: str


def bleu4(reference: str, hypothesis: str) -> float:
    """The challenge's ``get_bleu4``: 4-gram precision with its per-occurrence clipping (see module doc)."""
    ref, hyp = reference.split(), hypothesis.split()
    ref4 = [" ".join(ref[i:i + 4]) for i in range(len(ref) - 3)]
    hyp4 = [" ".join(hyp[i:i + 4]) for i in range(len(hyp) - 3)]
    if not hyp4:
        return 0.0
    return sum(min(hyp4.count(g), ref4.count(g)) for g in hyp4) / len(hyp4)


def rouge_l(reference: str, hypothesis: str) -> float:
    """The challenge's ``get_rouge``: LCS F1 on lower-cased whitespace tokens."""
    ref, hyp = reference.lower().split(), hypothesis.lower().split()
    if not ref or not hyp:
        return 0.0
    row = [0] * (len(hyp) + 1)
    for r in ref:
        prev_diag, row[0] = 0, 0
        for j, h in enumerate(hyp, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if r == h else max(row[j], row[j - 1])
    lcs = row[-1]
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b|; 0 when both are empty (the challenge's ``get_jaccard``)."""
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def rescaled_cosine(a: np.ndarray, b: np.ndarray, scale: float = EMB_SCALE) -> float:
    """Cosine of two vectors, values above ``scale`` mapped to ``(cos - scale) / (1 - scale)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    score = float(a @ b) / norm if norm > 0 else 0.0  # sklearn's cosine_similarity gives 0 for a zero vector
    return (score - scale) / (1 - scale) if scale != 0 and score > scale else score


# --- the models ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _spacy_pipeline(model: str) -> Any:
    import spacy

    try:  # registers scispaCy's pipeline components when it is installed, as the challenge's code does
        importlib.import_module("scispacy")
    except ImportError:
        pass
    return spacy.load(model)


def spacy_keywords(model: str = DEFAULT_KEYWORD_MODEL) -> KeywordExtractor | Unavailable:
    """The challenge's keyword extractor on an installed spaCy package or a local model folder.

    Nothing is downloaded: a model that is not installed gives :class:`Unavailable`.
    """
    if model == DISABLED:
        return Unavailable(f"KEY is disabled (reg2025_keyword_model = {DISABLED!r})")
    hint = ("install spaCy and a scispaCy model (pip install 'milkit[reg2025]', then the model from "
            "https://allenai.github.io/scispacy/, e.g. en_core_sci_lg) and set reg2025_keyword_model to its "
            "package name or folder")
    try:
        nlp = _spacy_pipeline(model)
    except ImportError as exc:
        return Unavailable(f"KEY needs spaCy ({exc}); {hint}")
    except (OSError, ValueError) as exc:
        return Unavailable(f"KEY: spaCy could not load {model!r} ({str(exc).splitlines()[0]}); {hint}")

    def extract(texts: Sequence[str]) -> list[set[str]]:
        return [{e.text.lower() for e in doc.ents if len(e.text) >= MIN_KEYWORD_CHARS} for doc in nlp.pipe(texts)]

    return extract


def _local_model(model: str) -> str | None:
    """Why ``model`` is not available locally (None when it is): a folder, or a hub id in the HF cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return None
    if model.startswith((".", "/", "~")) or model.count("/") > 1:  # a path, not a hub id (namespace/name)
        return f"{model}: no such model folder"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None  # let transformers look for it
    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return None
    return f"{model!r} is not a local folder and is not in the Hugging Face cache (milkit never downloads it)"


@functools.lru_cache(maxsize=1)
def _transformer(model: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    net = AutoModel.from_pretrained(model, local_files_only=True).to(device).eval()
    return tokenizer, net


def transformer_embedder(model: str = DEFAULT_EMBEDDING_MODEL, *, device: str | None = None,
                         batch_size: int = 16) -> Embedder | Unavailable:
    """The challenge's sentence embedding: mean of the last hidden states of ``model`` (transformers).

    ``model`` is a local folder or a hub id already in the Hugging Face cache; nothing is downloaded.
    Texts are batched with padding and a masked mean, which equals the challenge's one-text-at-a-time
    mean to float rounding (a tokenizer without a pad token runs one text at a time).
    """
    if model == DISABLED:
        return Unavailable(f"EMB is disabled (reg2025_embedding_model = {DISABLED!r})")
    hint = ("download it once (e.g. `huggingface-cli download dmis-lab/biobert-v1.1`) or set "
            "reg2025_embedding_model to a local model folder")
    missing = _local_model(model)
    if missing:
        return Unavailable(f"EMB: {missing}; {hint}")
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tokenizer, net = _transformer(model, device)
    except ImportError as exc:
        return Unavailable(f"EMB needs transformers ({exc}); pip install 'milkit[reg2025]'")
    except (OSError, ValueError, KeyError) as exc:
        return Unavailable(f"EMB: transformers could not load {model!r} ({str(exc).splitlines()[0]}); {hint}")
    step = batch_size if tokenizer.pad_token is not None else 1

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), step):
            enc = tokenizer(list(texts[i:i + step]), return_tensors="pt", padding=step > 1, truncation=True,
                            max_length=MAX_TOKENS).to(device)
            hidden = net(**enc).last_hidden_state.float()                  # b t d
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)    # b t 1
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu())  # b d
        return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)

    return embed


# --- the score -------------------------------------------------------------------------------------

def reg2025_per_report(generated: Sequence[str], references: Sequence[str], *,
                       keywords: KeywordExtractor | Unavailable,
                       embedder: Embedder | Unavailable) -> list[dict[str, float | None]]:
    """Per scored pair (empty references skipped): ROUGE, BLEU, KEY, EMB and the ranking score.

    KEY/EMB (and then the ranking score) are None when their model is :class:`Unavailable`.
    """
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    pairs = [(r, g) for r, g in zip(references, generated, strict=True) if r != ""]
    refs, gens = [r for r, _ in pairs], [g for _, g in pairs]
    key: list[float | None] = [None] * len(pairs)
    emb: list[float | None] = [None] * len(pairs)
    if pairs and not isinstance(keywords, Unavailable):
        ref_kw, gen_kw = keywords(refs), keywords(gens)
        key = [jaccard(set(a), set(b)) for a, b in zip(ref_kw, gen_kw, strict=True)]
    if pairs and not isinstance(embedder, Unavailable):
        vectors = embedder(refs + gens)                                     # 2n d
        emb = [rescaled_cosine(vectors[i], vectors[len(pairs) + i]) for i in range(len(pairs))]
    rows: list[dict[str, float | None]] = []
    for (ref, gen), k, e in zip(pairs, key, emb, strict=True):
        row: dict[str, float | None] = {"ROUGE": rouge_l(ref, gen), "BLEU": bleu4(ref, gen), "KEY": k, "EMB": e}
        parts = [row[p] for p in WEIGHTS]
        row["REG2025"] = (None if any(v is None for v in parts)
                          else sum(WEIGHTS[p] * float(row[p]) for p in WEIGHTS))  # type: ignore[arg-type]
        rows.append(row)
    return rows


def reg2025_score(generated: Sequence[str], references: Sequence[str], *,
                  keywords: KeywordExtractor | Unavailable,
                  embedder: Embedder | Unavailable) -> dict[str, Any]:
    """Mean over reports of the ranking score and of each part.

    Keys: ``REG2025`` (None unless every part is available), ``REG2025_ROUGE``, ``REG2025_BLEU``,
    ``REG2025_KEY``, ``REG2025_EMB`` (None when unavailable), ``REG2025_n`` (pairs scored), and
    ``REG2025_unavailable_reason`` only when something is missing.
    """
    rows = reg2025_per_report(generated, references, keywords=keywords, embedder=embedder)
    reasons = [src.reason for src in (keywords, embedder) if isinstance(src, Unavailable)]
    if not rows:
        reasons.append("no pair has a non-empty reference")

    def mean(part: str) -> float | None:
        values = [r[part] for r in rows]
        return None if not values or any(v is None for v in values) else float(np.mean(values))

    out: dict[str, Any] = {"REG2025": mean("REG2025"), **{f"REG2025_{p}": mean(p) for p in WEIGHTS},
                           "REG2025_n": len(rows)}
    if reasons:
        out["REG2025_unavailable_reason"] = "; ".join(reasons)
    return out
