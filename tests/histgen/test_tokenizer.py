"""HistGen word tokenizer: the cleaner's quirks, vocabulary rules, encode/decode, state round trip."""

import json

import pytest

from milkit.histgen.tokenizer import SENTENCE_PUNCT, UNK, Tokenizer, clean_report

FIXTURE = "reports/shubhamgp47-histgen-pathology-reports/HistGen4TITAN_1_baseline_Last_Checkpoint/gen_vs_gt.csv"


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("grade 2. Tumor", "grade . tumor ."),  # the numbering clean-up eats the real "2"
        ("Size 2.5 cm", "size 25 cm ."),  # decimal point deleted inside the sentence
        ("pT2a N0/1", "pt2a n01 ."),  # slashes deleted
        ("Tumor present.", "tumor present ."),
        ("A. . B", "a .  . b ."),  # empty sentence kept (upstream's `!= []` is always true)
        ("", " ."),
        ("size 11. next", "size 1next ."),  # "1. " is deleted everywhere, even inside "11. "
        ("1. Breast: left. 2. Lymph node", "breast left . lymph node ."),
        ("a__b\n\nc....d", "ab cd ."),  # "__" collapses to "_", which the class then deletes
        ("ratio 3:1 <5> x=y? @home", "ratio 31 5 xy home ."),
        ("core-needle #3 $5 a|b ~c `d`", "core-needle #3 $5 a|b ~c `d` ."),  # kept: - # $ | ~ `
        ('He said "no" [sic] {x} 50% a+b!', "he said no sic x 50 ab ."),
    ],
)
def test_clean_report_reproduces_histgen_quirks(raw: str, cleaned: str) -> None:
    assert clean_report(raw) == cleaned


def test_regex_class_is_a_range_from_colon_to_bracket() -> None:
    removed = "".join(chr(c) for c in range(0x3A, 0x5C))  # ':' .. '['
    assert removed == ":;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ["
    assert SENTENCE_PUNCT.sub("", removed + "-#$|~09az") == "-#$|~09az"


def test_vocabulary_threshold_unk_and_lexicographic_ids() -> None:
    reports = ["b a. c"] * 3 + ["zz a"]
    tok = Tokenizer.build(reports, threshold=3)  # tokens: b, a, ., c (x3); zz (x1), a (x4)
    assert tok.idx2token == {1: ".", 2: "<unk>", 3: "a", 4: "b", 5: "c"}
    assert tok.token2idx == {".": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5}
    assert tok.vocab_size == 5 and tok.unk_id == 2
    assert Tokenizer.build(reports, threshold=1).vocab_size == 6  # zz joins
    assert list(Tokenizer.build([], threshold=10).idx2token.values()) == [UNK]


def test_encode_decode_round_trip_and_unknown_words() -> None:
    tok = Tokenizer.build(["tumor is present. margins are clear"], threshold=1)
    ids = tok.encode("Tumor is present. Margins are clear", max_len=100)
    assert ids[0] == 0 and ids[-1] == 0 and 0 not in ids[1:-1]
    assert tok.decode(ids[1:]) == "tumor is present . margins are clear ."
    assert tok.decode(tok.encode("tumor is absent", 100)[1:]) == "tumor is <unk> ."
    # Upstream decode has no BOS skipping: a leading 0 stops at once.
    assert tok.decode(ids) == ""
    assert tok.decode_batch([ids[1:], [0, 5]]) == ["tumor is present . margins are clear .", ""]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size + 1])


def test_truncation_histgen_drops_eos_fixed_keeps_it() -> None:
    tok = Tokenizer.build(["a b c d e"], threshold=1)  # cleaned: a b c d e . -> 6 tokens, 8 ids
    full = tok.encode("a b c d e", max_len=100)
    assert len(full) == 8
    assert tok.encode("a b c d e", max_len=8) == full
    assert tok.encode("a b c d e", max_len=5) == full[:5] and tok.encode("a b c d e", 5)[-1] != 0
    fixed, truncated = tok.encode_fixed("a b c d e", max_len=5)
    assert truncated and fixed == full[:4] + [0] and len(fixed) == 5
    assert tok.encode_fixed("a b c d e", max_len=8) == (full, False)
    with pytest.raises(ValueError):
        tok.encode_fixed("a", max_len=1)


def test_to_dict_from_dict_round_trip_through_json() -> None:
    tok = Tokenizer.build(["x y z. y z. z", "q"], threshold=2)
    state = json.loads(json.dumps(tok.to_dict()))
    back = Tokenizer.from_dict(state)
    assert back == tok and back.idx2token == tok.idx2token and back.token2idx == tok.token2idx
    assert back.to_dict() == tok.to_dict() and back.threshold == 2
    with pytest.raises(ValueError, match="format"):
        Tokenizer.from_dict({"vocab": ["a"]})


def test_cleaner_on_real_reports(shared_data) -> None:
    import pandas as pd

    refs = pd.read_csv(shared_data / FIXTURE, keep_default_na=False, dtype=str)["Ground Truths"].tolist()
    assert clean_report(refs[0]) == (
        "breast core-needle biopsy invasive carcinoma of no special type grade i "
        "tubule formation 2 nuclear grade 2 mitoses 1 ."
    )
    tok = Tokenizer.build(refs, threshold=10)
    vocab = list(tok.idx2token.values())
    assert vocab == sorted(vocab) and UNK in vocab and "." in vocab
    assert all(not SENTENCE_PUNCT.search(t) and t == t.lower() for t in vocab if t not in (UNK, "."))
    assert 50 < tok.vocab_size < 1000
    # Every training report encodes without EOS loss at HistGen's max_seq_length=100.
    assert all(tok.encode(r, 100)[-1] == 0 for r in refs)
    decoded = [tok.decode(tok.encode(r, 100)[1:]) for r in refs]
    unk_free = [d for d, r in zip(decoded, refs, strict=True) if UNK not in d]
    assert len(unk_free) > len(refs) // 2
    assert all(d == " ".join(clean_report(r).split()) for d, r in zip(decoded, refs, strict=True) if UNK not in d)
