"""HistGen's report generation head: word tokenizer, CMN-augmented decoder, beam search."""

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.errors import MilkitError
from milkit.head import Head, HeadOutput, Row
from milkit.histgen.cmn import CrossModalMemory
from milkit.histgen.decoder import ReportDecoder
from milkit.histgen.decoding import beam_search, greedy_decode
from milkit.histgen.tokenizer import Tokenizer
from milkit.metrics.reports import ReportMetricsConfig, report_metric_problems

if TYPE_CHECKING:
    from milkit.viz.rundata import RunView
    from milkit.viz.sink import PlotSink

Decoding = Literal["beam", "greedy"]


class ReportConfig(ReportMetricsConfig):
    report_column: str = Field("report", description="Cohort column holding the report text.")
    max_seq_length: int = Field(100, ge=3, description="Id-sequence length incl. BOS/EOS; also the generation limit.")
    threshold: int = Field(10, ge=1, description="Minimum train-split word count for the vocabulary.")
    keep_eos: bool = Field(True, description="Truncated reports still end with EOS (false = HistGen, which drops it).")
    beam_size: int = Field(3, ge=1, description="Beams for decoding = 'beam'.")
    decoding: Decoding = Field("beam", description="Decoding for final predictions.")
    val_decoding: Decoding = Field("greedy", description="Decoding for per-epoch validation (greedy: ~beam_size x faster).")
    d_model: int = Field(512, gt=0, description="Decoder width.")
    num_heads: int = Field(8, gt=0, description="Decoder attention heads.")
    d_ff: int = Field(512, gt=0, description="Decoder feed-forward width.")
    num_layers: int = Field(3, ge=1, description="Decoder layers.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Decoder dropout.")
    cmm_size: int = Field(2048, gt=0, description="Memory slots, when the aggregator has no memory to share.")
    topk: int = Field(512, gt=0, description="Memory top-k, when the aggregator has no memory to share.")


class Report(Head):
    """Report generation as in HistGen (Guo et al., MICCAI 2024, arXiv:2403.05396).

    Teacher-forced masked NLL over ``ids[:, 1:]``; tokens attend (causally) to each other
    and to the aggregator's region tokens; each token embedding adds its response from the
    cross-modal memory, shared with the ``histgen`` aggregator when there is one. Decoding:
    HistGen's beam search (default) or greedy, batched, with a key/value cache.
    """

    name = "report"
    Config = ReportConfig
    requires_tokens = True
    target_columns = ("report",)
    monitor = "BLEU_4"
    monitor_mode = "max"
    text_output = "generated"

    def __init__(self, config: ReportConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        c = config
        self.tokenizer = Tokenizer.from_dict(target_state["tokenizer"])
        self.max_len = int(target_state.get("max_seq_length", c.max_seq_length))
        cmn = CrossModalMemory(c.d_model, c.cmm_size, c.num_heads, min(c.topk, c.cmm_size), c.dropout)
        self.decoder = ReportDecoder(self.tokenizer.vocab_size, c.d_model, c.num_heads, c.d_ff, c.num_layers,
                                     c.dropout, cmn, in_dim=in_dim)
        self._decoding: Decoding | None = None

    def bind(self, aggregator: Aggregator) -> None:
        """Share the aggregator's cross-modal memory (HistGen's single memory) when it has one."""
        cmn = getattr(aggregator, "cmn", None)
        if isinstance(cmn, CrossModalMemory):
            if cmn.dim != self.config.d_model:
                raise MilkitError(f"[head] d_model ({self.config.d_model}) must equal the aggregator's memory "
                                  f"width cmm_dim ({cmn.dim}) to share HistGen's cross-modal memory")
            self.decoder.cmn = cmn

    def encode_report(self, text: str) -> tuple[list[int], bool]:
        """Ids ``[0, ..., 0]`` of at most ``max_seq_length``, and whether the report was cut."""
        if self.config.keep_eos:
            return self.tokenizer.encode_fixed(text, self.max_len)
        ids = self.tokenizer.encode(text, self.max_len)
        return ids, ids[-1] != 0

    @classmethod
    def required_columns(cls, config: ReportConfig) -> tuple[str, ...]:
        return (config.report_column,)

    @classmethod
    def fit_targets(cls, config: ReportConfig, train_rows: list[Row]) -> dict[str, Any]:
        reports = [str(r[config.report_column]) for r in train_rows]
        tok = Tokenizer.build(reports, threshold=config.threshold)
        cut = sum(len(tok.tokenize(t)) + 2 > config.max_seq_length for t in reports)
        encoded = [tok.decode(tok.encode(t, config.max_seq_length)[1:]) for t in reports]
        most_common = max(sorted(set(encoded)), key=encoded.count) if encoded else ""
        return {"tokenizer": tok.to_dict(), "max_seq_length": config.max_seq_length, "n_truncated_train": cut,
                "most_common_report": most_common}

    @classmethod
    def check_rows(cls, config: ReportConfig, rows: list[Row]) -> list[str]:
        col = config.report_column
        problems = report_metric_problems(config)  # an unreadable findings vocabulary fails before training
        bad = [str(r.get("slide_id", "?")) for r in rows
               if not isinstance(r.get(col), str) or not r[col].strip()]
        if not bad:
            return problems
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return [*problems,
                f"column '{col}' is empty for slide(s) {', '.join(bad[:5])}{more}: every slide needs a report"]

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        seqs = [self.encode_report(str(r[self.config.report_column]))[0] for r in rows]
        ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return {"ids": ids, "lengths": torch.tensor([len(s) for s in seqs])}

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        """Teacher-forced log-probs [B, T-1, V+1] of ``targets['ids'][:, 1:]`` (use ``predict`` to generate)."""
        if targets is None or "ids" not in targets:
            raise ValueError("the report head scores given reports; call predict() to generate reports")
        if x.tokens is None or x.token_mask is None:
            raise ValueError("the report head needs an aggregator that provides tokens (e.g. 'histgen')")
        return HeadOutput({"logprobs": self.decoder(targets["ids"][:, :-1], x.tokens, x.token_mask)})

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        """HistGen's masked NLL: ``-sum(m * lp[y]) / sum(m)`` over targets ``ids[:, 1:]``."""
        lp = out.values["logprobs"].float()                           # b t v
        y = targets["ids"][:, 1:].to(lp.device)
        m = (torch.arange(y.shape[1], device=lp.device)[None] < (targets["lengths"].to(lp.device)[:, None] - 1))
        nll = -lp.gather(-1, y[..., None]).squeeze(-1)                  # b t
        return (nll * m).sum() / m.sum().clamp_min(1)

    @contextmanager
    def decoding_mode(self, mode: Decoding) -> Iterator[None]:
        """Temporarily decode with ``mode`` (the trainer uses ``config.val_decoding`` per epoch)."""
        previous, self._decoding = self._decoding, mode
        try:
            yield
        finally:
            self._decoding = previous

    def validation(self) -> contextlib.AbstractContextManager[None]:
        """Per-epoch validation decodes with ``val_decoding``; the final evaluation with ``decoding``."""
        return self.decoding_mode(self.config.val_decoding)

    def generate(self, x: AggregatorOutput, mode: Decoding | None = None) -> Tensor:
        """Generated ids [B, max_seq_length], zero after EOS."""
        if x.tokens is None or x.token_mask is None:
            raise ValueError("the report head needs an aggregator that provides tokens (e.g. 'histgen')")
        mode = mode or self._decoding or self.config.decoding
        if mode == "greedy":
            return greedy_decode(self.decoder, x.tokens, x.token_mask, self.max_len)
        return beam_search(self.decoder, x.tokens, x.token_mask, self.config.beam_size, self.max_len)

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        """Records with the generated text and two references: ``reference``, the original report
        cleaned as the tokenizer cleans it (milkit's default), and ``reference_histgen``, HistGen's
        convention (decoded from the truncated id sequence, so out-of-vocabulary words are ``<unk>``)."""
        ids = self.generate(x).cpu().tolist()
        records = []
        for row, seq in zip(rows, ids):
            text = row.get(self.config.report_column)
            usable = isinstance(text, str) and text.strip()
            ref_ids, cut = self.encode_report(text) if usable else ([0, 0], False)
            records.append({"slide_id": row["slide_id"], "generated": self.tokenizer.decode(seq),
                            "reference": " ".join(self.tokenizer.tokenize(text)) if usable else "",
                            "reference_histgen": self.tokenizer.decode(ref_ids[1:]), "truncated": bool(cut)})
        return records

    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        """Every report metric against the original reports (cleaned), the pycocoevalcap scores under
        HistGen's convention too (``histgen_protocol_*``), truncations and the constant-report baseline."""
        from milkit.metrics.reports import report_metrics, score_reports

        generated, references = [r["generated"] for r in records], [r["reference"] for r in records]
        histgen = [r.get("reference_histgen", r["reference"]) for r in records]
        scores = report_metrics(generated, references, self.config, protocols={"histgen_protocol": histgen})
        scores["n_truncated"] = sum(bool(r.get("truncated")) for r in records)
        baseline = self.target_state.get("most_common_report")
        if baseline and records:  # a model that always writes the commonest training report
            base = score_reports([baseline] * len(records), references, meteor=False)
            scores.update({f"baseline_{k}": v for k, v in base.items() if k in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr")})
        return scores

    @classmethod
    def plots(cls, run: "RunView", sink: "PlotSink") -> None:
        """A table of generated vs reference reports with per-report scores."""
        from milkit.viz.task_plots import draw_report_samples

        draw_report_samples(run, sink)

    def validation_metrics(self, records: list[Row]) -> dict[str, Any]:
        """BLEU, ROUGE-L, CIDEr and the overall finding agreement: no METEOR (a JVM start), no REG2025
        (its models), no HistGen-protocol scores and no baseline."""
        from milkit.metrics.reports import report_validation_metrics

        scores = report_validation_metrics([r["generated"] for r in records], [r["reference"] for r in records],
                                           self.config)
        scores["n_truncated"] = sum(bool(r.get("truncated")) for r in records)
        return scores
