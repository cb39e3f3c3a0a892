"""HistGen's word-level report tokenizer (``modules/tokenizers.py``), quirks included.

The cleaner (``milkit.metrics.report_text.clean_report``) reproduces upstream's
``clean_report_pathology`` character for character; see that module for its quirks.

Vocabulary: tokens with a train count >= ``threshold`` plus ``<unk>``, sorted lexicographically,
ids from 1. Id 0 is BOS, EOS and PAD at once.
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from milkit.metrics.report_text import SENTENCE_PUNCT, clean_report

UNK = "<unk>"
BOS = EOS = PAD = 0
FORMAT = "milkit.histgen.tokenizer/1"
__all__ = ["BOS", "EOS", "FORMAT", "PAD", "SENTENCE_PUNCT", "UNK", "Tokenizer", "clean_report"]


class Tokenizer:
    """Word-level vocabulary over cleaned reports; id 0 = BOS = EOS = PAD, real tokens from 1."""

    def __init__(self, idx2token: dict[int, str], *, threshold: int | None = None) -> None:
        if sorted(idx2token) != list(range(1, len(idx2token) + 1)):
            raise ValueError("idx2token ids must be exactly 1..V (id 0 is reserved for BOS/EOS/PAD)")
        if UNK not in idx2token.values():
            raise ValueError(f"the vocabulary must contain {UNK!r}")
        self.idx2token: dict[int, str] = dict(sorted(idx2token.items()))
        self.token2idx: dict[str, int] = {tok: idx for idx, tok in self.idx2token.items()}
        if len(self.token2idx) != len(self.idx2token):
            raise ValueError("idx2token maps two ids to the same token")
        self.threshold = threshold

    @classmethod
    def build(cls, reports: Iterable[str], threshold: int = 10) -> "Tokenizer":
        """Vocabulary from *training* reports: tokens seen ``>= threshold`` times, plus ``<unk>``."""
        counts = Counter(tok for report in reports for tok in clean_report(report).split())
        vocab = sorted([tok for tok, c in counts.items() if c >= threshold] + [UNK])
        return cls({i + 1: tok for i, tok in enumerate(vocab)}, threshold=threshold)

    @property
    def vocab_size(self) -> int:
        """V = number of real tokens (``<unk>`` included, id 0 excluded); logits need V + 1."""
        return len(self.idx2token)

    @property
    def unk_id(self) -> int:
        """Id of ``<unk>``."""
        return self.token2idx[UNK]

    def tokenize(self, report: str) -> list[str]:
        """Cleaned report split on whitespace (``.`` is a token)."""
        return clean_report(report).split()

    def _ids(self, report: str) -> list[int]:
        unk = self.unk_id
        return [BOS] + [self.token2idx.get(tok, unk) for tok in self.tokenize(report)] + [EOS]

    def encode(self, report: str, max_len: int) -> list[int]:
        """HistGen encoding: ``([0] + ids + [0])[:max_len]``; reports over ``max_len - 2`` tokens lose EOS."""
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        return self._ids(report)[:max_len]

    def encode_fixed(self, report: str, max_len: int) -> tuple[list[int], bool]:
        """Like :meth:`encode`, but a truncated report still ends with EOS; returns ``(ids, truncated)``."""
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 to hold BOS and EOS, got {max_len}")
        ids = self._ids(report)
        if len(ids) <= max_len:
            return ids, False
        return ids[: max_len - 1] + [EOS], True

    def decode(self, ids: Iterable[int]) -> str:
        """Upstream ``decode``: tokens joined by spaces up to the first 0.

        There is no BOS skipping: a sequence that *starts* with 0 decodes to ``""``. HistGen
        passes generated ids (no BOS) and ``targets[:, 1:]`` for ground truths.
        """
        words = []
        for idx in ids:
            idx = int(idx)
            if idx <= 0:  # upstream: `if idx > 0: ... else: break`
                break
            if idx not in self.idx2token:
                raise ValueError(f"token id {idx} is outside the vocabulary (1..{self.vocab_size})")
            words.append(self.idx2token[idx])
        return " ".join(words)

    def decode_batch(self, ids_batch: Iterable[Iterable[int]]) -> list[str]:
        """:meth:`decode` for each sequence."""
        return [self.decode(ids) for ids in ids_batch]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state; :meth:`from_dict` restores an identical tokenizer."""
        return {"format": FORMAT, "threshold": self.threshold, "vocab": [self.idx2token[i] for i in self.idx2token]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Tokenizer":
        """Inverse of :meth:`to_dict` (``vocab[i]`` has id ``i + 1``)."""
        if d.get("format") != FORMAT or not isinstance(d.get("vocab"), Sequence):
            raise ValueError(f"not a milkit HistGen tokenizer state (expected format {FORMAT!r} and a 'vocab' list)")
        return cls({i + 1: str(tok) for i, tok in enumerate(d["vocab"])}, threshold=d.get("threshold"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.idx2token == other.idx2token

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, threshold={self.threshold})"
