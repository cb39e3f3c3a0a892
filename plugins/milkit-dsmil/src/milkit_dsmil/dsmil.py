"""A DSMIL-style dual-stream aggregator (after Li, Li & Eliceiri, CVPR 2021, arXiv:2011.08939): the worked
example of a milkit plugin. milkit ships the reference DSMIL built in as ``dsmil``; this one registers as
``dsmil_example``, since two components of one name are refused."""

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from milkit import Aggregator, AggregatorOutput, ComponentConfig


class DSMILConfig(ComponentConfig):
    embed_dim: int = Field(128, gt=0, description="Width of the per-patch embedding (V in the paper).")
    n_critical: int = Field(
        2, gt=0, description="Instance-classifier outputs, one critical instance each; usually the number of classes."
    )
    query_dim: int = Field(128, gt=0, description="Width of the query space the bag attention is computed in.")
    nonlinear_query: bool = Field(True, description="Query network Linear-ReLU-Linear-Tanh instead of one Linear.")
    passing_v: bool = Field(False, description="Transform the values with Dropout-Linear-ReLU (else V = embedding).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the embedding (and on V with passing_v).")


class DSMIL(Aggregator):
    """Dual-stream MIL aggregator in the style of DSMIL (Li et al., CVPR 2021); the example plugin's variant.

    Stream 1 scores every patch with an instance classifier and max-pools the scores
    over real patches. Stream 2 takes, per class, the highest-scoring (critical) patch,
    measures every patch's query against the critical patch's query (scaled by
    ``sqrt(query_dim)``, softmax over the bag's real patches) and pools the values with
    these weights into one bag vector per class.

    Output: ``embedding`` = [flattened per-class bag vectors, max instance scores],
    ``[B, n_critical * (embed_dim + 1)]``; ``attention`` = the class-averaged bag
    attention, ``[B, N]``, 0 at padded patches.

    Differences from the paper: the per-class ``Conv1d`` bag classifier and the average
    of both streams' predictions are left to the head, which sees both streams in the
    embedding (a linear head can express that average); a learnt patch embedding
    precedes both streams (the reference has none: its FCLayer passes the features through).
    Reference implementation: binli123/dsmil-wsi ``dsmil.py`` (``BClassifier``). For the reference model
    itself use milkit's built-in ``dsmil`` (milkit.components.aggregators.dsmil).
    """

    name = "dsmil_example"
    Config = DSMILConfig
    permutation_invariant = True

    def __init__(self, config: DSMILConfig, *, in_dim: int) -> None:
        super().__init__(config, in_dim=in_dim)
        e, c, q = config.embed_dim, config.n_critical, config.query_dim
        self.out_dim = c * (e + 1)
        self.embed = nn.Sequential(nn.Linear(in_dim, e), nn.ReLU(), nn.Dropout(config.dropout))
        self.instance_classifier = nn.Linear(e, c)
        self.query: nn.Module = (
            nn.Sequential(nn.Linear(e, q), nn.ReLU(), nn.Linear(q, q), nn.Tanh())
            if config.nonlinear_query
            else nn.Linear(e, q)
        )
        self.value: nn.Module = (
            nn.Sequential(nn.Dropout(config.dropout), nn.Linear(e, e), nn.ReLU()) if config.passing_v else nn.Identity()
        )
        self.scale = 1.0 / math.sqrt(q)

    def forward(self, feats: Tensor, mask: Tensor, coords: Tensor) -> AggregatorOutput:
        h = self.embed(feats)                                            # b n e
        real = mask.unsqueeze(-1)                                        # b n 1
        # stream 1: instance scores, max over real patches
        scores = self.instance_classifier(h)                             # b n c
        scores = scores.masked_fill(~real, torch.finfo(scores.dtype).min)
        max_scores, critical = scores.max(dim=1)                         # b c, b c (patch index per class)
        max_scores = torch.where(mask.any(1, keepdim=True), max_scores, torch.zeros_like(max_scores))
        # stream 2: attention of every patch to each class's critical patch
        queries = self.query(h)                                          # b n q
        idx = critical.unsqueeze(-1).expand(-1, -1, queries.shape[-1])   # b c q
        critical_q = queries.gather(1, idx)                              # b c q
        logits = torch.einsum("bnq,bcq->bnc", queries, critical_q) * self.scale  # b n c
        logits = logits.masked_fill(~real, torch.finfo(logits.dtype).min)
        attn = torch.softmax(logits, dim=1) * real.to(logits.dtype)      # b n c, 0 at padding
        bag = torch.einsum("bnc,bne->bce", attn, self.value(h))          # b c e
        embedding = torch.cat([bag.flatten(1), max_scores.to(bag.dtype)], dim=-1)  # b c*(e+1)
        return AggregatorOutput(embedding=embedding, attention=attn.mean(-1))      # b n
