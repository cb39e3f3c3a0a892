"""HistGen's report cleaner (``Tokenizer.clean_report_pathology``), the convention its published
scores use, so any report model can be scored as HistGen scores it.

It is reproduced character for character:

* the regex class ``[.,?;*!%^&_+():-\\[\\]{}]`` contains the *range* ``:-\\[`` (0x3A-0x5B), so
  ``: ; < = > ? @`` (and ``A-Z``, moot after lower-casing) are deleted while ``-``, digits, ``#``,
  ``$``, ``|`` and ``~`` survive;
* decimal points vanish ("2.5 cm" -> "25 cm"), "0/1" -> "01";
* the numbering clean-up eats real numbers ("grade 2. Tumor" -> "grade . tumor .");
* the emptiness test compares a string with ``[]`` (always true), so empty sentences are kept
  and produce ``. .`` runs.
"""

import re

# Upstream writes '[.,?;*!%^&_+():-\\[\\]{}]'; ":-\[" is a range, see the module docstring.
SENTENCE_PUNCT = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def _clean_sentence(sentence: str) -> str:
    """Upstream ``sent_cleaner``: drop quotes and slashes, strip, lowercase, delete the class."""
    s = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "")
    return SENTENCE_PUNCT.sub("", s.strip().lower())


def clean_report(text: str) -> str:
    """HistGen's ``clean_report_pathology``: normalise, split on ``". "``, clean, join with ``" . "``."""
    t = text.replace("\n", " ")
    for _ in range(7):
        t = t.replace("__", "_")
    for _ in range(6):
        t = t.replace("  ", " ")
    for _ in range(8):
        t = t.replace("..", ".")
    t = t.replace("1. ", "")
    for n in "2345":
        t = t.replace(f". {n}. ", ". ")
    for n in "2345":
        t = t.replace(f" {n}. ", ". ")
    # Upstream's filter `sent_cleaner(sent) != []` is always true: empty sentences stay.
    sentences = [_clean_sentence(s) for s in t.strip().lower().split(". ")]
    return " . ".join(sentences) + " ."
