"""Report generation by retrieval: the report of the nearest training slide(s) in embedding space.

Slides whose reports say the same thing are pulled together by a contrastive objective on the
(projected) slide embedding; a new slide gets the report of its nearest training slide by cosine
similarity, or a consensus of its ``k`` nearest. The index of training embeddings is a buffer of
the head, filled by the trainer (:meth:`milkit.Head.index_train_split`) and saved with every
checkpoint, so ``milkit generate`` retrieves from the training reports of a finished run.
"""

import math
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from milkit.aggregator import AggregatorOutput
from milkit.errors import MilkitError
from milkit.head import Head, HeadOutput, Row
from milkit.metrics.report_text import clean_report
from milkit.metrics.reports import ReportMetricsConfig, report_row_problems

if TYPE_CHECKING:
    from milkit.viz.rundata import RunView
    from milkit.viz.sink import PlotSink

FORMAT = "milkit.retrieval/1"
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: the temperature never drops below 0.01
CENTER_MOMENTUM = 0.1  # the training-time running mean, as BatchNorm's


class RetrievalConfig(ReportMetricsConfig):
    report_column: str = Field("report", description="Cohort column holding the report text.")
    k: int = Field(1, ge=1, description="Training slides retrieved per slide; k > 1 picks one report by `consensus`.")
    consensus: Literal["medoid", "vote"] = Field(
        "medoid", description="k > 1: 'medoid' = the retrieved report most similar (TF-IDF cosine) on average to the "
        "other k-1; 'vote' = the most frequent retrieved report. Ties go to the nearer slide.")
    objective: Literal["supcon", "soft", "none"] = Field(
        "soft", description="'supcon': supervised contrastive, positives = reports with TF-IDF cosine >= "
        "positive_threshold; 'soft': InfoNCE towards report-similarity targets; 'none': train nothing (retrieve on "
        "the aggregator's embedding; only the reported loss's temperature is fitted).")
    proj_dim: int = Field(128, ge=0, description="Width of the learnt retrieval projection; 0 = retrieve on the "
                          "aggregator's embedding as it is (required with objective = 'none').")
    temperature: float = Field(0.1, gt=0.01, le=1.0, description="Initial temperature of the slide similarities "
                               "(learnt, as CLIP's logit scale).")
    positive_threshold: float = Field(1.0, gt=0.0, le=1.0, description="supcon: report TF-IDF cosine from which two "
                                      "slides are positives (1.0 = the same words in the same proportions).")
    target_temperature: float = Field(0.1, gt=0.0, description="soft: temperature of the report-similarity targets "
                                      "(smaller = closer to supcon with only the most similar reports).")
    center: bool = Field(True, description="Subtract the training slides' mean embedding before the cosine "
                         "(SimpleShot's CL2N): embeddings that share a large common part become comparable.")
    clean: Literal["histgen", "none"] = Field(
        "histgen", description="How reports are written and scored: 'histgen' = HistGen's cleaner re-joined by single "
        "spaces (scores comparable with the 'report' head); 'none' = the text as given, stripped.")

    @model_validator(mode="after")
    def _none_trains_no_projection(self) -> "RetrievalConfig":
        if self.objective == "none" and self.proj_dim > 0:
            raise ValueError("objective = 'none' trains nothing, so a projection would stay random: set proj_dim = 0 "
                             "(retrieve on the aggregator's embedding)")
        return self


def normalise_report(text: str, clean: str) -> str:
    """The report as the head writes and scores it (see ``RetrievalConfig.clean``)."""
    return " ".join(clean_report(text).split()) if clean == "histgen" else text.strip()


def report_words(text: str) -> list[str]:
    """The words of a report for its TF-IDF vector: HistGen-cleaned tokens with a letter or digit."""
    return [w for w in clean_report(text).split() if any(ch.isalnum() for ch in w)]


class ReportVectors:
    """TF-IDF vectors of reports over the training vocabulary (:func:`report_words`), L2-normalised.

    idf = ln((1 + n) / (1 + df)) + 1 over the n training reports (scikit-learn's smooth idf); words
    outside the training vocabulary are ignored, and a report without known words is the zero vector.
    """

    def __init__(self, vocab: list[str], idf: list[float]) -> None:
        self.index = {w: i for i, w in enumerate(vocab)}
        self.idf = torch.tensor(idf, dtype=torch.float32)                       # v

    @classmethod
    def fit(cls, reports: list[str]) -> tuple[list[str], list[float]]:
        """Vocabulary (sorted) and idf of the training reports."""
        df = Counter(w for text in reports for w in set(report_words(text)))
        vocab = sorted(df)
        return vocab, [math.log((1 + len(reports)) / (1 + df[w])) + 1.0 for w in vocab]

    def __call__(self, texts: list[str]) -> Tensor:
        """[n, V] unit (or zero) vectors."""
        out = torch.zeros(len(texts), len(self.index))
        for i, text in enumerate(texts):
            for w, c in Counter(report_words(text)).items():
                if w in self.index:
                    out[i, self.index[w]] = float(c)
        return F.normalize(out * self.idf, dim=-1)


def contrastive_loss(z: Tensor, report_sim: Tensor, scale: Tensor, *, objective: str, threshold: float,
                     target_temperature: float) -> Tensor:
    """Mean over anchors of the cross-entropy between targets q and softmax(scale * cos(z_i, z_j)), j != i.

    ``supcon`` (Khosla et al. 2020, L_out): q uniform over the positives (report similarity >=
    ``threshold``); anchors without a positive are left out. ``soft``: q = softmax_j(report_sim /
    ``target_temperature``). A batch with no usable anchor gives 0 (with a graph, for backward).

    Args:
        z: [B, P] unit slide embeddings. report_sim: [B, B] report similarities. scale: inverse temperature.
    """
    b = z.shape[0]
    off = ~torch.eye(b, dtype=torch.bool, device=z.device)                   # b b, j != i
    logits = (scale * z @ z.T).masked_fill(~off, torch.finfo(z.dtype).min)    # b b
    log_p = torch.log_softmax(logits, dim=1).masked_fill(~off, 0.0)           # b b, 0 on the diagonal
    if objective == "supcon":
        q = ((report_sim >= threshold - 1e-6) & off).to(z.dtype)              # b b
        q = q / q.sum(1, keepdim=True).clamp_min(1.0)
    elif b > 1:
        q = torch.softmax((report_sim / target_temperature).masked_fill(~off, -math.inf), dim=1)
    else:  # one slide: nothing to contrast
        q = torch.zeros_like(report_sim)
    anchors = q.sum(1) > 0                                                    # b
    if not anchors.any():
        return (z.sum() + scale) * 0.0
    return -(q * log_p).sum(1)[anchors].mean()


class Retrieval(Head):
    """Retrieval report head: the report of the nearest training slide(s), by cosine similarity.

    Training pulls together slides whose reports are alike (``objective``) in a projected space
    (``proj_dim``), centred by the training mean (``center``); the trainer then indexes every
    training slide's embedding (eval mode, current weights, before each validation and at the end
    of training) into ``bank``, a buffer saved with the checkpoint. Prediction excludes the query's
    own case (a training slide never retrieves itself or a sibling slide). Metrics are the
    ``report`` head's (:func:`milkit.metrics.reports.report_metrics`) and the constant-report baseline.
    """

    name = "retrieval"
    Config = RetrievalConfig
    target_columns = ("report",)
    monitor = "BLEU_4"
    monitor_mode = "max"
    text_output = "generated"

    def __init__(self, config: RetrievalConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        if target_state.get("format") != FORMAT:
            raise MilkitError(f"not a retrieval head's target state (expected format {FORMAT!r}); fit_targets makes it")
        self.slides: list[str] = list(target_state["slides"])
        self.cases: list[str] = list(target_state["cases"])
        self.reports: list[str] = list(target_state["reports"])
        self.slide_pos = {s: i for i, s in enumerate(self.slides)}
        self.case_pos: dict[str, list[int]] = {}
        for i, case in enumerate(self.cases):
            self.case_pos.setdefault(case, []).append(i)
        self.vectors = ReportVectors(target_state["vocab"], target_state["idf"])
        self.proj = nn.Linear(in_dim, config.proj_dim) if config.proj_dim > 0 else None
        self.out_dim = config.proj_dim or in_dim
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        n = len(self.slides)
        self.register_buffer("bank", torch.zeros(n, self.out_dim))                       # n p, unit rows
        self.register_buffer("center", torch.zeros(self.out_dim))                        # p
        self.register_buffer("center_set", torch.zeros((), dtype=torch.bool))
        self.register_buffer("bank_filled", torch.zeros(n, dtype=torch.bool))            # n
        self.register_buffer("bank_report", torch.tensor(target_state["report_of"], dtype=torch.long),
                             persistent=False)                                            # n

    @classmethod
    def required_columns(cls, config: RetrievalConfig) -> tuple[str, ...]:
        return (config.report_column,)

    @classmethod
    def check_rows(cls, config: RetrievalConfig, rows: list[Row]) -> list[str]:
        return report_row_problems(config, rows, config.report_column)  # a bad vocabulary fails before training

    @classmethod
    def fit_targets(cls, config: RetrievalConfig, train_rows: list[Row]) -> dict[str, Any]:
        """Training slides (the index order), their cases and reports, and the TF-IDF vocabulary."""
        texts = [normalise_report(str(r[config.report_column]), config.clean) for r in train_rows]
        reports = list(dict.fromkeys(texts))
        position = {t: i for i, t in enumerate(reports)}
        vocab, idf = ReportVectors.fit([str(r[config.report_column]) for r in train_rows])
        counts = Counter(texts)
        most_common = min(reports, key=lambda t: (-counts[t], t)) if reports else ""
        return {"format": FORMAT, "slides": [str(r["slide_id"]) for r in train_rows],
                "cases": [str(r.get("case_id", r["slide_id"])) for r in train_rows], "reports": reports,
                "report_of": [position[t] for t in texts], "vocab": vocab, "idf": idf,
                "most_common_report": most_common}

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        """``bank_index`` [B] (-1: not a training slide) and ``report_vec`` [B, V] TF-IDF vectors."""
        col = self.config.report_column
        return {"bank_index": torch.tensor([self.slide_pos.get(str(r["slide_id"]), -1) for r in rows]),
                "report_vec": self.vectors([str(r.get(col) or "") for r in rows])}

    def features(self, x: AggregatorOutput) -> Tensor:
        """[B, P] retrieval features before centring and normalisation (float32)."""
        h = x.embedding if self.proj is None else self.proj(x.embedding)
        return h.float()

    def embed(self, x: AggregatorOutput) -> Tensor:
        """[B, P] unit retrieval embeddings: centred by ``center`` (when ``config.center``) and L2-normalised."""
        return self._normalise(self.features(x))

    def _normalise(self, h: Tensor) -> Tensor:
        return F.normalize(h - self.center.to(h) if self.config.center else h, dim=-1)

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        """``embedding`` [B, P]. Centring works as BatchNorm's statistics do: a training batch is
        centred by its own mean, which ``center`` tracks as a running mean; eval uses ``center``
        (which the index pass sets to the exact training mean). In training, the training slides'
        embeddings also refresh their bank rows."""
        h = self.features(x)
        if self.training and self.config.center:
            mean = h.mean(0)                                                                 # p
            batch = mean.detach().to(self.center)
            self.center.copy_(batch if not self.center_set else torch.lerp(self.center, batch, CENTER_MOMENTUM))
            self.center_set.fill_(True)
            z = F.normalize(h - mean, dim=-1)
        else:
            z = self._normalise(h)
        if self.training and targets is not None and "bank_index" in targets:
            self._write(z, targets["bank_index"])
        return HeadOutput({"embedding": z})

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        c = self.config
        z = out.values["embedding"]
        if c.objective == "none":
            z = z.detach()  # report the loss of the fixed embedding; only the temperature learns
        r = targets["report_vec"].to(z.device)
        scale = self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
        return contrastive_loss(z, r @ r.T, scale, objective="soft" if c.objective == "none" else c.objective,
                                threshold=c.positive_threshold, target_temperature=c.target_temperature)

    def index_train_split(self, batches: Iterator[tuple[AggregatorOutput, list[Row]]]) -> None:
        """Rebuild the bank from the training split, encoded with the current weights; ``center``
        becomes the exact mean of the training slides' features."""
        self.bank_filled.zero_()
        for x, rows in batches:
            self._write(self.features(x), torch.tensor([self.slide_pos.get(str(r["slide_id"]), -1) for r in rows]))
        if self.config.center and bool(self.bank_filled.any()):
            self.center.copy_(self.bank[self.bank_filled].mean(0))
            self.center_set.fill_(True)
        self.bank[self.bank_filled] = self._normalise(self.bank[self.bank_filled])

    def _write(self, z: Tensor, index: Tensor) -> None:
        """Bank rows ``index`` (-1: skip) := ``z`` [B, P], marked filled."""
        keep = index >= 0
        if keep.any():
            rows = index[keep].to(self.bank.device)
            self.bank[rows] = z.detach()[keep.to(z.device)].to(self.bank)
            self.bank_filled[rows] = True

    def retrieve(self, x: AggregatorOutput, rows: list[Row]) -> list[list[tuple[int, float]]]:
        """Per row, up to ``k`` ``(bank position, cosine)``, nearest first (ties: the earlier training slide).

        Unfilled bank rows and the row's own case are never retrieved.
        """
        if not bool(self.bank_filled.any()):
            raise MilkitError("the retrieval head's index is empty: train it with milkit run (the trainer indexes "
                              "the training split), or call index_train_split() with the training slides")
        sims = self.embed(x) @ self.bank.T.to(torch.float32)                                 # b n
        allowed = self.bank_filled[None, :].expand_as(sims).clone()                          # b n
        for i, row in enumerate(rows):
            own = self.case_pos.get(str(row.get("case_id", "")), [])
            pos = self.slide_pos.get(str(row["slide_id"]))
            allowed[i, own + ([pos] if pos is not None else [])] = False
        sims = sims.masked_fill(~allowed, -math.inf)
        values, order = torch.sort(sims, dim=1, descending=True, stable=True)                # b n
        out = []
        for i in range(len(rows)):
            n = min(self.config.k, int(allowed[i].sum()))
            out.append([(int(order[i, j]), float(values[i, j])) for j in range(n)])
        return out

    def choose(self, hits: list[tuple[int, float]]) -> int:
        """The index of the report written for one row's ``hits`` (see ``RetrievalConfig.consensus``)."""
        reports = [int(self.bank_report[p]) for p, _ in hits]
        if len(reports) <= 1:
            return reports[0] if reports else -1
        if self.config.consensus == "vote":
            count = Counter(reports)
            return max(reports, key=lambda r: count[r])  # max keeps the first (nearest) of the tied
        vec = self.vectors([self.reports[r] for r in reports])                               # k v
        sim = vec @ vec.T                                                                    # k k
        mean_other = (sim.sum(1) - sim.diagonal()) / (len(reports) - 1)                      # k
        best = max(range(len(reports)), key=lambda j: (round(float(mean_other[j]), 6), -j))
        return reports[best]

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        col = self.config.report_column
        records = []
        for row, hits in zip(rows, self.retrieve(x, rows)):
            chosen = self.choose(hits)
            text = row.get(col)
            records.append({
                "slide_id": row["slide_id"],
                "generated": self.reports[chosen] if chosen >= 0 else "",
                "reference": normalise_report(text, self.config.clean) if isinstance(text, str) else "",
                "neighbours": ";".join(self.slides[p] for p, _ in hits),
                "similarity": round(hits[0][1], 6) if hits else None,
            })
        return records

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        """The ``report`` head's metrics (:func:`milkit.metrics.reports.report_metrics`: BLEU-1..4, METEOR,
        ROUGE-L, CIDEr, finding agreement, REG2025), the mean top-1 cosine and the constant-report baseline."""
        from milkit.metrics.reports import score_reports

        scores = self._scores(records)
        baseline = self.target_state.get("most_common_report")
        if baseline and records:  # a model that always writes the commonest training report
            base = score_reports([baseline] * len(records), [r["reference"] for r in records], meteor=False)
            scores.update({f"baseline_{k}": v for k, v in base.items()
                           if k in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr")})
        return scores

    def validation_metrics(self, records: list[Row]) -> dict[str, Any]:
        """The n-gram scores and finding agreement: no METEOR (a JVM start), no REG2025 (its models), no baseline."""
        return self._scores(records, meteor=False, reg2025_score=False)

    def _scores(self, records: list[Row], **parts: bool) -> dict[str, Any]:
        from milkit.metrics.reports import report_metrics

        scores = report_metrics([r["generated"] for r in records], [r["reference"] for r in records], self.config,
                                **parts)
        scores["mean_similarity"] = sum(r["similarity"] or 0.0 for r in records) / max(len(records), 1)
        return scores

    @classmethod
    def plots(cls, run: "RunView", sink: "PlotSink") -> None:
        """A table of retrieved vs reference reports with per-report scores (as the ``report`` head)."""
        from milkit.viz.task_plots import draw_report_samples

        draw_report_samples(run, sink)
