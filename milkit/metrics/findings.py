"""Finding agreement: clinical fields read from generated and reference reports by rules, then compared.

A *vocabulary* (TOML) maps each field (tumour type, grade, margin...) to its values and each value
to the phrases that state it. Reports are lower-cased, split into clauses at ``.``/``;``/``!``/``?``
followed by a space and at newlines, and into word tokens (letters and digits; punctuation is a
separator), so raw text and HistGen-cleaned text read alike. Per field, phrases are matched
leftmost-longest without overlap; a phrase token ``#`` matches any number. A match preceded or
followed (within ``window`` tokens of its clause) by a negation cue ("no", "not identified"...)
is negated: it then states the field's ``negated`` value if the vocabulary names one, else nothing.
A field's value is its first surviving match. See docs/report-metrics.md for the file format.
"""

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from milkit.errors import MilkitError

SHIPPED = ("demo", "tcga")
"""Vocabularies that ship with milkit (``milkit/metrics/vocabularies/<name>.toml``)."""
DISABLED = "none"
"""The ``findings_vocabulary`` value that turns finding agreement off."""
NUMBER = "#"
"""Phrase token that matches any token made of digits."""

_CLAUSE = re.compile(r"[.;!?](?=\s|$)|\n")
_WORD = re.compile(r"[^\W_]+")
_TOP_KEYS = {"name", "description", "fields", "negated", "ignore", "negation"}
_NEGATION_KEYS = {"before", "after", "stop", "window"}
DEFAULT_NEGATION: dict[str, Any] = {
    "before": ["no", "not", "without", "negative for", "free of", "absence of"],
    "after": ["not identified", "not seen", "not present", "not detected", "absent", "negative", "none"],
    "stop": ["present", "identified", "seen", "positive", "noted"],
    "window": 3,
}
"""Negation cues of a vocabulary without a ``[negation]`` table."""


class VocabularyError(MilkitError):
    """A findings vocabulary is missing or malformed; the message names the file and each bad key."""


@dataclass(frozen=True)
class Phrase:
    """One phrase of a field: its tokens and the value it states (None for an ``[ignore]`` phrase)."""

    tokens: tuple[str, ...]
    value: str | None

    @property
    def rank(self) -> tuple[int, int]:
        """Longer first, then more literal (non-``#``) tokens."""
        return len(self.tokens), sum(t != NUMBER for t in self.tokens)


@dataclass(frozen=True)
class Negation:
    """Negation cues (token tuples), the words that end a search for an after-cue, and the window."""

    before: tuple[tuple[str, ...], ...]
    after: tuple[tuple[str, ...], ...]
    stop: frozenset[str]
    window: int


@dataclass(frozen=True)
class Vocabulary:
    """A parsed vocabulary: fields in file order, their phrases indexed by first token."""

    name: str
    source: str
    values: dict[str, tuple[str, ...]]
    """field -> its values, in file order."""
    phrases: dict[str, dict[str, tuple[Phrase, ...]]]
    """field -> first token (``#`` for a number) -> phrases starting with it, in file order."""
    negated: dict[str, str]
    """field -> the value a negated mention states (fields without one drop negated mentions)."""
    negation: Negation

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.values)


def tokens(phrase: str) -> tuple[str, ...]:
    """Word tokens of a phrase as matching sees them; ``#`` stays a wildcard."""
    out: list[str] = []
    for piece in phrase.lower().split():
        out.extend([NUMBER] if piece == NUMBER else _WORD.findall(piece))
    return tuple(out)


def clauses(text: str) -> list[list[str]]:
    """A report as clauses of word tokens (empty clauses dropped)."""
    return [toks for part in _CLAUSE.split(text.lower()) if (toks := _WORD.findall(part))]


def vocabulary_path(spec: str) -> Path | None:
    """The file a ``findings_vocabulary`` value names (a shipped name or a path); None for ``'none'``."""
    if spec == DISABLED:
        return None
    if spec in SHIPPED:
        return Path(str(resources.files("milkit.metrics").joinpath("vocabularies", f"{spec}.toml")))
    return Path(spec).expanduser()


def check_spec(spec: str) -> str:
    """Check the form of a ``findings_vocabulary`` value without reading any file (config validation)."""
    if spec == DISABLED or spec in SHIPPED or spec.endswith(".toml"):
        return spec
    raise ValueError(f"findings_vocabulary must be one of {', '.join(map(repr, (*SHIPPED, DISABLED)))} "
                     f"or the path of a .toml vocabulary file, got {spec!r}")


def load_vocabulary(spec: str | Path) -> Vocabulary:
    """Read and check a vocabulary: a shipped name (``'demo'``, ``'tcga'``) or a TOML path.

    Raises:
        VocabularyError: the file is missing, not TOML, or breaks the format (every problem listed).
    """
    path = vocabulary_path(str(spec)) if isinstance(spec, str) else spec
    if path is None:
        raise VocabularyError(f"findings_vocabulary is {DISABLED!r}: there is no vocabulary to load")
    if not path.is_file():
        raise VocabularyError(f"findings vocabulary {str(spec)!r}: no such file ({path}); use a shipped "
                              f"vocabulary ({', '.join(SHIPPED)}) or the path of a TOML file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"{path}: not a readable TOML file ({exc})") from None
    return parse_vocabulary(data, source=str(path), default_name=path.stem)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)


def parse_vocabulary(data: dict[str, Any], *, source: str, default_name: str) -> Vocabulary:
    """Build a :class:`Vocabulary` from parsed TOML; every problem is collected into one error."""
    problems: list[str] = [f"unknown key {k!r} (valid: {', '.join(sorted(_TOP_KEYS))})" for k in data
                           if k not in _TOP_KEYS]
    fields = data.get("fields")
    if not isinstance(fields, dict) or not fields:
        problems.append("fields: required, a table of [fields.<field>] tables (value = [phrases])")
        fields = {}
    values: dict[str, tuple[str, ...]] = {}
    phrases: dict[str, dict[str, list[Phrase]]] = {}
    for field, table in fields.items():
        if not isinstance(table, dict) or not table:
            problems.append(f"fields.{field}: must be a table of value = [phrases]")
            continue
        values[field] = tuple(table)
        seen: dict[tuple[str, ...], str] = {}
        for value, items in table.items():
            if not _str_list(items):
                problems.append(f"fields.{field}.{value}: must be a non-empty list of phrases (strings)")
                continue
            for text in items:
                toks = tokens(text)
                if not toks:
                    problems.append(f"fields.{field}.{value}: phrase {text!r} has no letters or digits")
                elif seen.setdefault(toks, value) != value:
                    problems.append(f"fields.{field}.{value}: phrase {text!r} also states {seen[toks]!r}")
                else:
                    phrases.setdefault(field, {}).setdefault(toks[0], []).append(Phrase(toks, value))
    negated = data.get("negated", {})
    if not isinstance(negated, dict):
        problems.append("negated: must be a table of field = value")
        negated = {}
    for field, value in negated.items():
        if field not in values:
            problems.append(f"negated.{field}: not a field (fields: {', '.join(values)})")
        elif value not in values[field]:
            problems.append(f"negated.{field}: {value!r} is not a value of {field} "
                            f"(values: {', '.join(values[field])})")
    ignore = data.get("ignore", {})
    if not isinstance(ignore, dict):
        problems.append("ignore: must be a table of field = [phrases]")
        ignore = {}
    for field, items in ignore.items():
        if field not in values:
            problems.append(f"ignore.{field}: not a field (fields: {', '.join(values)})")
        elif not _str_list(items):
            problems.append(f"ignore.{field}: must be a non-empty list of phrases (strings)")
        else:
            for toks in filter(None, map(tokens, items)):
                phrases.setdefault(field, {}).setdefault(toks[0], []).append(Phrase(toks, None))
    negation = _negation(data.get("negation", {}), problems)
    name = data.get("name", default_name)
    if not isinstance(name, str):
        problems.append("name: must be a string")
    if problems:
        raise VocabularyError(f"{source}: not a valid findings vocabulary:\n  " + "\n  ".join(problems))
    return Vocabulary(name=str(name), source=source, values=values,
                      phrases={f: {k: tuple(v) for k, v in idx.items()} for f, idx in phrases.items()},
                      negated=dict(negated), negation=negation)


def _negation(table: Any, problems: list[str]) -> Negation:
    if not isinstance(table, dict):
        problems.append("negation: must be a table (before, after, stop, window)")
        table = {}
    problems += [f"negation: unknown key {k!r} (valid: {', '.join(sorted(_NEGATION_KEYS))})" for k in table
                 if k not in _NEGATION_KEYS]
    merged = {**DEFAULT_NEGATION, **table}
    for key in ("before", "after", "stop"):
        if not isinstance(merged[key], list) or not all(isinstance(v, str) for v in merged[key]):
            problems.append(f"negation.{key}: must be a list of strings")
            merged[key] = []
    window = merged["window"]
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        problems.append(f"negation.window: must be an integer >= 0, got {window!r}")
        window = 0
    return Negation(before=tuple(filter(None, map(tokens, merged["before"]))),
                    after=tuple(filter(None, map(tokens, merged["after"]))),
                    stop=frozenset(t for s in merged["stop"] for t in tokens(s)), window=window)


# --- extraction ------------------------------------------------------------------------------------

def _fits(phrase: tuple[str, ...], toks: Sequence[str], i: int) -> bool:
    if i + len(phrase) > len(toks):
        return False
    return all(p == t or (p == NUMBER and t.isdigit()) for p, t in zip(phrase, toks[i:i + len(phrase)]))


def _matches(toks: Sequence[str], index: dict[str, tuple[Phrase, ...]]) -> list[tuple[int, int, Phrase]]:
    """Leftmost-longest, non-overlapping phrase matches ``(start, end, phrase)`` in one clause."""
    out, i = [], 0
    while i < len(toks):
        keys = (toks[i], NUMBER) if toks[i].isdigit() else (toks[i],)
        best: Phrase | None = None
        for key in keys:
            for p in index.get(key, ()):
                if (best is None or p.rank > best.rank) and _fits(p.tokens, toks, i):
                    best = p
        if best is None:
            i += 1
        else:
            out.append((i, i + len(best.tokens), best))
            i += len(best.tokens)
    return out


def _negated(toks: Sequence[str], start: int, end: int, neg: Negation, blocked: set[int]) -> bool:
    """A before-cue ends, or an after-cue starts, at most ``window`` tokens from the match, with no
    stop word in between ("invasion not identified, necrosis present": "identified" ends the scope).
    Tokens in ``blocked`` (inside another phrase, e.g. the "no" of "carcinoma of no special type")
    are never cues."""

    def cue_at(a: int, cue: tuple[str, ...]) -> bool:
        return (a >= 0 and tuple(toks[a:a + len(cue)]) == cue
                and not any(k in blocked for k in range(a, a + len(cue))))

    for gap in range(neg.window + 1):
        cue_end = start - gap
        if cue_end <= 0:
            break
        if any(cue_at(cue_end - len(c), c) for c in neg.before):
            return True
        if toks[cue_end - 1] in neg.stop:
            break
    for j in range(end, min(len(toks), end + neg.window + 1)):
        if any(cue_at(j, c) for c in neg.after):
            return True
        if toks[j] in neg.stop:  # "lymphovascular invasion present, no necrosis": stop at "present"
            break
    return False


def extract_findings(text: str, vocab: Vocabulary) -> dict[str, str]:
    """field -> value stated by ``text`` (fields the text does not state are absent)."""
    found: dict[str, str] = {}
    for toks in clauses(text):
        matches = {field: _matches(toks, index) for field, index in vocab.phrases.items()}
        blocked = {k for field, ms in matches.items() for s, e, p in ms
                   if p.value is None or p.value != vocab.negated.get(field) for k in range(s, e)}
        for field, ms in matches.items():
            for start, end, phrase in ms:
                if field in found:
                    break
                value = phrase.value
                if value is None:  # an [ignore] phrase: it only shadows shorter matches
                    continue
                if _negated(toks, start, end, vocab.negation, blocked - set(range(start, end))):
                    neg = vocab.negated.get(field)
                    if neg is None or neg == value:
                        continue
                    value = neg
                found[field] = value
    return {f: found[f] for f in vocab.fields if f in found}


# --- agreement -------------------------------------------------------------------------------------

def macro_f1(truth: Sequence[str], predicted: Sequence[str | None]) -> float:
    """Mean per-class F1 over the classes in ``truth`` or ``predicted`` (None = not stated: a miss only)."""
    labels = sorted(set(truth) | {p for p in predicted if p is not None})
    scores = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def finding_agreement(generated: Sequence[str], references: Sequence[str], vocab: Vocabulary) -> dict[str, Any]:
    """Per field: accuracy and macro-F1 of the generated value against the reference's, and coverage.

    A report counts for a field only when its reference states the field; a generated report that
    states nothing for it is wrong. ``coverage`` is the fraction of reports whose reference states
    the field; accuracy and macro-F1 are None when no reference does. ``findings_accuracy`` and
    ``findings_macro_f1`` average the fields that were scored.
    """
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    gen = [extract_findings(t, vocab) for t in generated]
    ref = [extract_findings(t, vocab) for t in references]
    out: dict[str, Any] = {"findings_vocabulary": vocab.name}
    accuracies, f1s = [], []
    for field in vocab.fields:
        pairs = [(r[field], g.get(field)) for r, g in zip(ref, gen, strict=True) if field in r]
        acc = f1 = None
        if pairs:
            truth, pred = [t for t, _ in pairs], [p for _, p in pairs]
            acc = sum(t == p for t, p in pairs) / len(pairs)
            f1 = macro_f1(truth, pred)
            accuracies.append(acc)
            f1s.append(f1)
        out[f"finding_{field}_accuracy"] = acc
        out[f"finding_{field}_macro_f1"] = f1
        out[f"finding_{field}_coverage"] = len(pairs) / len(references) if references else 0.0
    out["findings_accuracy"] = sum(accuracies) / len(accuracies) if accuracies else None
    out["findings_macro_f1"] = sum(f1s) / len(f1s) if f1s else None
    out["findings_fields_scored"] = len(accuracies)
    return out
