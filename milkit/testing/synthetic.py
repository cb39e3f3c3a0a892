"""Synthetic inputs for the conformance checks: padded bags, cohort rows, aggregator outputs."""

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from milkit.aggregator import AggregatorOutput
from milkit.head import Row

_SENTENCES = (
    "the tumour shows moderate nuclear atypia .",
    "invasive ductal carcinoma is seen .",
    "the margins are clear .",
    "no necrosis is seen .",
    "the tumour is grade two .",
)


@dataclass
class Bags:
    """A padded batch: feats [B,N,D], mask [B,N] (True = real), coords [B,N,2] level-0 px."""

    feats: Tensor
    mask: Tensor
    coords: Tensor

    @property
    def lengths(self) -> list[int]:
        return self.mask.sum(1).tolist()

    def pad(self, extra: int, gen: torch.Generator) -> "Bags":
        """The same bags with ``extra`` garbage patches appended (mask False)."""
        b, _, d = self.feats.shape
        junk = torch.randn(b, extra, d, generator=gen) * 10 + 5                    # b k d, far from real data
        junk_xy = torch.rand(b, extra, 2, generator=gen) * 1e5                     # b k 2
        return Bags(
            torch.cat([self.feats, junk], 1),
            torch.cat([self.mask, torch.zeros(b, extra, dtype=torch.bool)], 1),
            torch.cat([self.coords, junk_xy], 1),
        )

    def select(self, index: list[int]) -> "Bags":
        return Bags(self.feats[index], self.mask[index], self.coords[index])


def make_bags(lengths: list[int], in_dim: int, gen: torch.Generator, *, pad_to: int | None = None) -> Bags:
    """Random bags of the given lengths, padded with garbage up to ``pad_to`` (default: the longest)."""
    n = max(pad_to or 0, max(lengths))
    feats = torch.randn(len(lengths), n, in_dim, generator=gen)                   # b n d
    coords = torch.randint(0, 50, (len(lengths), n, 2), generator=gen).float() * 256  # b n 2
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]               # b n
    junk = torch.randn(feats.shape, generator=gen) * 10 + 5
    feats = torch.where(mask[..., None], feats, junk)
    coords = torch.where(mask[..., None], coords, torch.full_like(coords, 1e5))
    return Bags(feats, mask, coords)


def synthetic_rows(n: int, gen: torch.Generator, config: Any = None) -> list[Row]:
    """``n`` cohort rows with the usual task columns: label, time, event, report, and a continuous
    target (``target``, a deterministic spread in [0.1, 0.9], no draw from ``gen``).

    Config fields named ``<x>_column`` whose value is a column name get the values of
    the standard column ``<x>`` (so ``label_column="subtype"`` gets labels).
    """
    rows: list[Row] = []
    for i in range(n):
        picks = torch.randint(0, len(_SENTENCES), (6 + i % 4,), generator=gen).tolist()  # words recur (vocabularies)
        rows.append(
            {
                "slide_id": f"slide_{i}",
                "case_id": f"case_{i // 2}",
                "label": "ABC"[i % 3],
                "time": round(float(torch.rand(1, generator=gen).item()) * 100 + 1, 2),
                "event": int(i % 3 != 2),
                "report": " ".join(_SENTENCES[p] for p in picks),
                "target": round(0.1 + 0.8 * ((i * 0.618) % 1.0), 4),
            }
        )
    fields = config.model_dump() if config is not None else {}
    for key, value in fields.items():
        std = key.removesuffix("_column")
        if key.endswith("_column") and isinstance(value, str) and std in rows[0]:
            for row in rows:
                row.setdefault(value, row[std])
    return rows


def synthetic_output(
    batch: int, dim: int, gen: torch.Generator, *, tokens: bool, n_patches: int = 6
) -> AggregatorOutput:
    """An AggregatorOutput as an aggregator of width ``dim`` would return it (leaf tensors with grad)."""
    embedding = torch.randn(batch, dim, generator=gen).requires_grad_()            # b e
    attention = torch.softmax(torch.randn(batch, n_patches, generator=gen), -1)    # b n
    if not tokens:
        return AggregatorOutput(embedding=embedding, attention=attention)
    lengths = [max(1, n_patches - i % 3) for i in range(batch)]
    token_mask = torch.arange(n_patches)[None, :] < torch.tensor(lengths)[:, None]  # b t
    toks = torch.randn(batch, n_patches, dim, generator=gen)                       # b t e
    toks = torch.where(token_mask[..., None], toks, torch.randn(toks.shape, generator=gen) * 10 + 5)
    return AggregatorOutput(embedding, attention, toks.requires_grad_(), token_mask)


def pad_tokens(x: AggregatorOutput, extra: int, gen: torch.Generator) -> AggregatorOutput:
    """``x`` with ``extra`` garbage tokens appended (token_mask False)."""
    assert x.tokens is not None and x.token_mask is not None
    b, _, e = x.tokens.shape
    junk = torch.randn(b, extra, e, generator=gen) * 10 + 5                         # b k e
    tokens = torch.cat([x.tokens, junk], 1)                                          # b t+k e
    token_mask = torch.cat([x.token_mask, torch.zeros(b, extra, dtype=torch.bool)], 1)
    return AggregatorOutput(x.embedding, x.attention, tokens, token_mask)
