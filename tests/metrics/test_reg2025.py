"""The REG2025 ranking score: each part as the challenge's eval.py computes it, the weighted per-report
mean, and unavailable parts reported with reasons instead of being dropped."""

import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from milkit.metrics import reg2025
from milkit.metrics.reg2025 import (
    Unavailable,
    bleu4,
    reg2025_per_report,
    reg2025_score,
    rescaled_cosine,
    rouge_l,
    spacy_keywords,
    transformer_embedder,
)

TERMS = ("carcinoma", "adenocarcinoma", "grade", "necrosis", "margin")


def keywords(texts: Sequence[str]) -> list[set[str]]:
    """A deterministic stand-in for scispaCy's entities: the known terms a text contains."""
    return [{w for w in t.lower().replace(".", " ").split() if w in TERMS} for t in texts]


def embed(texts: Sequence[str]) -> np.ndarray:
    """Bag-of-terms counts [n, |TERMS|] (plus a constant, so no vector is zero)."""
    return np.array([[t.lower().count(term) for term in TERMS] + [1] for t in texts], dtype=float)


def test_bleu_is_the_challenges_4gram_precision() -> None:
    assert bleu4("a b c d e", "a b c d x") == 0.5                   # 1 of 2 hypothesis 4-grams
    assert bleu4("a b c d e", "a b c") == 0.0                       # under 4 words
    assert bleu4("a b c d", "A b c d") == 0.0                       # case is kept
    # each repeat of a 4-gram adds min(hyp count, ref count): 2 + 2 over 2 four-grams
    assert bleu4("a a a a a", "a a a a a") == 2.0


def test_rouge_is_lcs_f1_on_lowercased_tokens() -> None:
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(2 * 5 / 6 / (1 + 5 / 6))
    assert rouge_l("The Cat", "the cat") == 1.0
    assert rouge_l("a b c", "") == 0.0 and rouge_l("a b", "c d") == 0.0
    assert rouge_l("a b c d", "d c b a") == pytest.approx(2 * 0.25 * 0.25 / 0.5)


def test_embedding_similarity_is_rescaled_above_one_half() -> None:
    assert rescaled_cosine(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    v = np.array([0.6, 0.8])
    assert rescaled_cosine(np.array([1.0, 0.0]), v) == pytest.approx((0.6 - 0.5) / 0.5)
    assert rescaled_cosine(np.array([1.0, 0.0]), np.array([0.4, 0.84**0.5])) == pytest.approx(0.4)  # kept
    assert rescaled_cosine(np.array([1.0, 0.0]), np.array([0.51, (1 - 0.51**2) ** 0.5])) == pytest.approx(0.02)
    assert rescaled_cosine(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == pytest.approx(-1.0)     # kept
    assert rescaled_cosine(np.zeros(2), v) == 0.0


def test_ranking_score_is_the_weighted_mean_of_per_report_scores() -> None:
    refs = ["adenocarcinoma grade 2 with necrosis", "carcinoma at the margin"]
    gens = ["adenocarcinoma grade 3 with necrosis", "carcinoma near the margin"]
    out = reg2025_score(gens, refs, keywords=keywords, embedder=embed)
    expected = []
    for ref, gen in zip(refs, gens):
        k = len(keywords([ref])[0] & keywords([gen])[0]) / len(keywords([ref])[0] | keywords([gen])[0])
        e = rescaled_cosine(embed([ref])[0], embed([gen])[0])
        expected.append((rouge_l(ref, gen), bleu4(ref, gen), k, e))
    # by hand, pair 0: LCS 4 of 5 -> ROUGE 0.8; 4-grams 0 of 2 -> BLEU 0; KEY 3/3; EMB identical counts -> 1
    assert expected[0] == pytest.approx((0.8, 0.0, 1.0, 1.0))
    assert expected[1][:3] == pytest.approx((0.75, 0.0, 1.0))
    per_pair = [0.15 * (r + b) + 0.4 * k + 0.3 * e for r, b, k, e in expected]
    assert out["REG2025"] == pytest.approx(np.mean(per_pair))
    assert out["REG2025_ROUGE"] == pytest.approx(np.mean([x[0] for x in expected]))
    assert out["REG2025_KEY"] == 1.0 and out["REG2025_n"] == 2 and "REG2025_unavailable_reason" not in out
    rows = reg2025_per_report(gens, refs, keywords=keywords, embedder=embed)
    assert [r["REG2025"] for r in rows] == pytest.approx(per_pair)


def test_unavailable_parts_make_the_score_none_with_reasons() -> None:
    refs, gens = ["carcinoma grade 2 .", ""], ["carcinoma grade 3 .", "x"]
    out = reg2025_score(gens, refs, keywords=Unavailable("no spaCy"), embedder=embed)
    assert out["REG2025"] is None and out["REG2025_KEY"] is None and out["REG2025_unavailable_reason"] == "no spaCy"
    assert out["REG2025_EMB"] is not None and out["REG2025_ROUGE"] == pytest.approx(rouge_l(refs[0], gens[0]))
    assert out["REG2025_n"] == 1                                     # the empty reference is skipped, as upstream
    both = reg2025_score(gens, refs, keywords=Unavailable("a"), embedder=Unavailable("b"))
    assert both["REG2025_unavailable_reason"] == "a; b" and both["REG2025_EMB"] is None
    none = reg2025_score(["x"], [""], keywords=keywords, embedder=embed)
    assert none["REG2025"] is None and "no pair has a non-empty reference" in none["REG2025_unavailable_reason"]
    with pytest.raises(ValueError, match="1 generated reports but 2"):
        reg2025_score(["x"], ["a", "b"], keywords=keywords, embedder=embed)


def test_missing_models_are_unavailable_not_downloaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reg2025._spacy_pipeline.cache_clear()
    monkeypatch.setitem(sys.modules, "spacy", None)                  # import spacy -> ImportError
    key = spacy_keywords("en_core_sci_lg")
    assert isinstance(key, Unavailable) and "KEY needs spaCy" in key.reason and "scispacy" in key.reason
    assert "disabled" in spacy_keywords("none").reason
    assert "no such model folder" in transformer_embedder(str(tmp_path / "absent")).reason
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    emb = transformer_embedder("dmis-lab/biobert-v1.1")
    assert isinstance(emb, Unavailable) and "not in the Hugging Face cache" in emb.reason
    assert "disabled" in transformer_embedder("none").reason


class _Encoding(dict):
    def to(self, device: str) -> "_Encoding":
        return self


class FakeTokenizer:
    """Word ids by word length, [CLS] = [SEP] = 1, right padding with 0 (None: no pad token)."""

    def __init__(self, pad_token: str | None) -> None:
        self.pad_token = pad_token

    def __call__(self, texts, *, return_tensors, padding, truncation, max_length):
        import torch

        seqs = [[1, *[2 + len(w) for w in t.split()][: max_length - 2], 1] for t in texts]
        assert padding or len(seqs) == 1, "a tokenizer without a pad token must get one text at a time"
        ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return _Encoding(input_ids=ids, attention_mask=(ids > 0).long())


def test_batched_embeddings_are_masked_means(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    net = torch.nn.Embedding(32, 4)
    model = lambda input_ids, attention_mask: SimpleNamespace(last_hidden_state=net(input_ids))  # noqa: E731
    texts = ["a bb ccc", "dddd", "a bb ccc dddd eeeee ffffff"]
    expected = [net(torch.tensor([1, *[2 + len(w) for w in t.split()], 1])).mean(0).detach().numpy() for t in texts]
    for pad_token in ("[PAD]", None):
        monkeypatch.setattr(reg2025, "_transformer", lambda m, d, p=pad_token: (FakeTokenizer(p), model))
        embedder = transformer_embedder(str(tmp_path), device="cpu", batch_size=2)
        np.testing.assert_allclose(embedder(texts), np.stack(expected), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_local_transformer_embeds_as_the_challenge_does(tmp_path: Path) -> None:
    """A tiny random BERT saved to a folder: batched masked means equal one-text-at-a-time means."""
    transformers = pytest.importorskip("transformers")
    import torch

    words = ["carcinoma", "grade", "2", "3", "necrosis", "margin", "the", "at"]
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.BertTokenizer(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    config = transformers.BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path)
    embedder = transformer_embedder(str(tmp_path), device="cpu", batch_size=4)
    assert not isinstance(embedder, Unavailable), getattr(embedder, "reason", "")
    texts = ["carcinoma grade 2", "necrosis at the margin grade 3 carcinoma", ""]
    got = embedder(texts)
    tok, net = reg2025._transformer(str(tmp_path), "cpu")
    with torch.no_grad():
        one_by_one = [net(**tok(t, return_tensors="pt")).last_hidden_state.mean(dim=1).squeeze(0).numpy()
                      for t in texts]
    assert got.shape == (3, 16)
    np.testing.assert_allclose(got, np.stack(one_by_one), rtol=1e-5, atol=1e-6)
    out = reg2025_score(texts[:2], texts[:2], keywords=keywords, embedder=embedder)
    assert out["REG2025_EMB"] == pytest.approx(1.0)
