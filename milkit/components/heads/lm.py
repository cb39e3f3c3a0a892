"""Report generation with a pretrained causal language model (GPT-2, BioGPT, Llama/Qwen) and a visual prefix.

Sequence of one slide: ``[aligned slide tokens][prompt]`` (left-padded per batch, so padding never sits
between real tokens), then the report and EOS. Positions count real tokens only (``cumsum(mask) - 1``),
as ``generate`` counts them, so training and decoding see the same positions. See docs/report-lm.md.
"""

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from milkit.aggregator import AggregatorOutput
from milkit.components.heads import lm_model
from milkit.components.heads.lm_aligner import MLPAligner, Resampler
from milkit.head import Head, HeadOutput, Row
from milkit.metrics.reports import ReportMetricsConfig, report_row_problems

if TYPE_CHECKING:
    from milkit.viz.rundata import RunView
    from milkit.viz.sink import PlotSink

Decoding = Literal["greedy", "beam", "sample"]


class LMConfig(ReportMetricsConfig):
    model: lm_model.TinyName | Path = Field(
        "tiny-gpt2", description="A local transformers folder (config.json, tokenizer, weights; relative to the "
        "recipe) or a built-in tiny random-init config: tiny-gpt2, tiny-llama, tiny-qwen2, tiny-biogpt (2 layers, "
        "64 wide, with a byte-level BPE trained on the training reports).")
    pretrained: bool = Field(True, description="Load the folder's weights; false: random init from its config.json.")
    tune: Literal["frozen", "lora", "full"] = Field("lora", description="Train the LM not at all, by LoRA adapters, "
                                                    "or fully (the aligner always trains).")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    lora_target_modules: list[str] | None = Field(
        None, description="Module names that get adapters; default GPT-2 c_attn, others q_proj and v_proj.")
    aligner: Literal["mlp", "resampler"] = Field(
        "mlp", description="Slide tokens -> prefix: a 2-layer MLP per token, or a Perceiver resampler.")
    num_prefix_tokens: int = Field(32, ge=1, description="Resampler: learned latents = prefix tokens per slide.")
    resampler_depth: int = Field(2, ge=1, description="Resampler: cross-attention + feed-forward layers.")
    resampler_heads: int = Field(4, ge=1, description="Resampler: attention heads (must divide the LM width).")
    prompt: str = Field("Final diagnosis:", description="Text between the prefix and the report.")
    max_new_tokens: int = Field(256, ge=2, description="Generation limit; training reports are cut to it "
                                "(EOS included).")
    decoding: Decoding = Field("beam", description="Decoding of the final predictions.")
    val_decoding: Decoding = Field("greedy", description="Decoding of the per-epoch validation pass.")
    beam_size: int = Field(3, ge=1, description="Beams for decoding = 'beam'.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (decoding = 'sample').")
    top_p: float = Field(1.0, gt=0, le=1.0, description="Nucleus sampling mass (decoding = 'sample'; 1 = off).")
    tokenizer_vocab_size: int = Field(1000, ge=260, description="Tiny configs: BPE vocabulary trained on the "
                                      "training reports (a folder brings its own tokenizer).")
    report_column: str = Field("report", description="Cohort column holding the report text.")
    score_clean: Literal["histgen", "none"] = Field(
        "histgen", description="Score after HistGen's report cleaner on both sides (milkit's default protocol, as "
        "the report head and milkit eval-reports), or as written.")


class LMReport(Head):
    """A causal LM from transformers as report decoder, conditioned on the aggregator's tokens.

    Loss: mean cross-entropy of the report tokens and EOS (prefix, prompt and padding are not
    targets: label -100). Decoding: transformers' ``generate`` from ``inputs_embeds`` with its KV
    cache, batched; greedy, beam or sampling. A frozen (or LoRA-tuned) LM loaded from a folder is
    not written into checkpoints: they hold the aligner, the adapters and a fingerprint of the
    folder's weights, checked on load.
    """

    name = "lm"
    Config = LMConfig
    requires_tokens = True
    target_columns = ("report",)
    monitor = "BLEU_4"
    monitor_mode = "max"
    text_output = "generated"

    def __init__(self, config: LMConfig, *, in_dim: int, target_state: dict[str, Any]) -> None:
        super().__init__(config, in_dim=in_dim, target_state=target_state)
        c = config
        lm_model.require(lora=c.tune == "lora")
        self.tokenizer = lm_model.load_tokenizer(c.model, target_state.get("tokenizer"))
        lm = lm_model.build_lm(c.model, self.tokenizer, pretrained=c.pretrained)
        if c.tune == "frozen":
            lm.requires_grad_(False)
        elif c.tune == "lora":
            lm = lm_model.add_lora(lm, r=c.lora_r, alpha=c.lora_alpha, dropout=c.lora_dropout,
                                   targets=c.lora_target_modules)
        self.lm = lm
        width = lm.get_input_embeddings().embedding_dim
        self.aligner = (MLPAligner(in_dim, width) if c.aligner == "mlp" else
                        Resampler(in_dim, width, n_latents=c.num_prefix_tokens, depth=c.resampler_depth,
                                  heads=c.resampler_heads))
        self.register_buffer("prompt_ids", torch.tensor(self.tokenizer(c.prompt).input_ids, dtype=torch.long),
                             persistent=False)                             # q
        self.eos_id, self.pad_id = int(self.tokenizer.eos_token_id), int(self.tokenizer.pad_token_id)
        self.max_positions = lm_model.max_positions(lm)
        self._decoding: Decoding | None = None
        self._frozen_keys: list[str] = []
        if not lm_model.is_tiny(c.model) and c.pretrained and c.tune != "full":
            self._leave_frozen_lm_out_of_checkpoints()

    # --- checkpoints: a frozen LM from a folder is not copied into every checkpoint ---------------
    def _leave_frozen_lm_out_of_checkpoints(self) -> None:
        trainable = {n for n, p in self.lm.named_parameters(remove_duplicate=False) if p.requires_grad}
        own = self.lm.state_dict()
        self._frozen_keys = [k for k in own if k not in trainable]
        self.register_buffer("lm_fingerprint", lm_model.fingerprint([own[k] for k in self._frozen_keys]))
        self.register_state_dict_post_hook(lm_model.drop_frozen)
        self.register_load_state_dict_pre_hook(lm_model.keep_frozen)

    def train(self, mode: bool = True) -> "LMReport":
        super().train(mode)
        if self.config.tune == "frozen":
            self.lm.eval()  # a frozen LM keeps its dropout off
        return self

    # --- targets --------------------------------------------------------------------------------
    @classmethod
    def required_columns(cls, config: LMConfig) -> tuple[str, ...]:
        return (config.report_column,)

    @classmethod
    def check_rows(cls, config: LMConfig, rows: list[Row]) -> list[str]:
        return report_row_problems(config, rows, config.report_column)  # a bad vocabulary fails before training

    @classmethod
    def fit_targets(cls, config: LMConfig, train_rows: list[Row]) -> dict[str, Any]:
        """The tiny configs' tokenizer (trained on the prompt and the training reports), truncations, and
        the commonest training report (the constant baseline of ``metrics``)."""
        from milkit.metrics.report_text import clean_report

        lm_model.require()
        reports = [str(r[config.report_column]).strip() for r in train_rows]
        trained = (lm_model.train_tokenizer([config.prompt, *reports], config.tokenizer_vocab_size)
                   if lm_model.is_tiny(config.model) else None)
        tok = lm_model.load_tokenizer(config.model, trained)
        cut = sum(len(lm_model.report_ids(tok, config.prompt, t)) + 1 > config.max_new_tokens for t in reports)
        key = clean_report if config.score_clean == "histgen" else str
        keys = [key(t) for t in reports]
        common = max(sorted(set(keys)), key=keys.count) if keys else None
        return {"tokenizer": trained, "n_truncated_train": cut,
                "most_common_report": reports[keys.index(common)] if common is not None else ""}

    def encode_report(self, text: str) -> tuple[list[int], bool]:
        """Report ids + EOS, at most ``max_new_tokens``, and whether the report was cut."""
        ids = lm_model.report_ids(self.tokenizer, self.config.prompt, text.strip())
        cut = len(ids) + 1 > self.config.max_new_tokens
        return ids[: self.config.max_new_tokens - 1] + [self.eos_id], cut

    def collate_targets(self, rows: list[Row]) -> dict[str, Tensor]:
        seqs = [self.encode_report(str(r[self.config.report_column]))[0] for r in rows]
        ids = torch.full((len(seqs), max(map(len, seqs))), self.pad_id, dtype=torch.long)  # b r
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        mask = torch.arange(ids.shape[1])[None] < torch.tensor([len(s) for s in seqs])[:, None]  # b r
        return {"ids": ids, "mask": mask}

    # --- the model ------------------------------------------------------------------------------
    def prefix(self, x: AggregatorOutput) -> tuple[Tensor, Tensor]:
        """``[aligned tokens][prompt]`` embeddings [B, K, H] and mask [B, K], real tokens right-aligned."""
        if x.tokens is None or x.token_mask is None:
            raise ValueError("the lm head needs an aggregator that provides tokens (e.g. 'perceiver', 'histgen')")
        emb = self.lm.get_input_embeddings()
        prefix, mask = self.aligner(x.tokens, x.token_mask)               # b p h, b p
        order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices  # padding first, real tokens in order
        mask = mask.gather(1, order)
        prefix = prefix.gather(1, order[..., None].expand_as(prefix))
        prefix = torch.where(mask[..., None], prefix, torch.zeros_like(prefix))
        drop = int((~mask).all(0).sum())                                   # columns that are padding in every row
        prefix, mask = prefix[:, drop:], mask[:, drop:]
        b = prefix.shape[0]
        prompt = emb(self.prompt_ids).expand(b, -1, -1)                   # b q h
        ones = torch.ones(b, prompt.shape[1], dtype=torch.bool, device=mask.device)
        return torch.cat((prefix.to(prompt.dtype), prompt), 1), torch.cat((mask, ones), 1)

    def logits(self, embeds: Tensor, mask: Tensor, keep: int) -> Tensor:
        """Logits [B, keep, V] of the last ``keep`` positions of ``embeds`` [B, L, H] (mask [B, L])."""
        if self.max_positions and embeds.shape[1] > self.max_positions:
            raise ValueError(f"{embeds.shape[1]} prefix + prompt + report tokens exceed the LM's {self.max_positions} "
                             "positions: lower [head] max_new_tokens, or use aligner = 'resampler'")
        positions = (mask.long().cumsum(-1) - 1).clamp_min(0)              # b l: real tokens only
        out = self.lm(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions, use_cache=False,
                      logits_to_keep=keep)
        return out.logits[:, -keep:]

    def forward(self, x: AggregatorOutput, targets: dict[str, Tensor] | None = None) -> HeadOutput:
        """Teacher-forced logits [B, R, V] of the report ids ``targets['ids']`` [B, R] (``predict`` generates)."""
        if targets is None or "ids" not in targets:
            raise ValueError("the lm head scores given reports; call predict() to generate reports")
        left, left_mask = self.prefix(x)                                   # b k h, b k
        ids, mask = targets["ids"].to(left.device), targets["mask"].to(left.device)
        embeds = torch.cat((left, self.lm.get_input_embeddings()(ids[:, :-1]).to(left.dtype)), 1)  # b k+r-1 h
        return HeadOutput({"logits": self.logits(embeds, torch.cat((left_mask, mask[:, :-1]), 1), ids.shape[1])})

    def loss(self, out: HeadOutput, targets: dict[str, Tensor]) -> Tensor:
        """Mean cross-entropy over the real report tokens (EOS included) of the batch."""
        logits = out.values["logits"].float()                              # b r v
        labels = targets["ids"].to(logits.device).masked_fill(~targets["mask"].to(logits.device), -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    # --- decoding -------------------------------------------------------------------------------
    @contextmanager
    def decoding_mode(self, mode: Decoding) -> Iterator[None]:
        """Temporarily decode with ``mode``."""
        previous, self._decoding = self._decoding, mode
        try:
            yield
        finally:
            self._decoding = previous

    def validation(self) -> contextlib.AbstractContextManager[None]:
        """Per-epoch validation decodes with ``val_decoding``; the final evaluation with ``decoding``."""
        return self.decoding_mode(self.config.val_decoding)

    def generate(self, x: AggregatorOutput, mode: Decoding | None = None) -> list[list[int]]:
        """Generated ids of each slide (EOS and what follows removed), with transformers' KV cache."""
        c = self.config
        mode = mode or self._decoding or c.decoding
        left, mask = self.prefix(x)                                        # b k h, b k
        if self.max_positions and left.shape[1] + c.max_new_tokens > self.max_positions:
            raise ValueError(f"{left.shape[1]} prefix + prompt tokens + max_new_tokens = {c.max_new_tokens} exceed the "
                             f"LM's {self.max_positions} positions: lower [head] max_new_tokens")
        options: dict[str, Any] = {"do_sample": False, "num_beams": 1}
        if mode == "beam":
            options["num_beams"] = c.beam_size
        elif mode == "sample":
            options = {"do_sample": True, "num_beams": 1, "temperature": c.temperature, "top_p": c.top_p, "top_k": 0}
        out = self.lm.generate(inputs_embeds=left, attention_mask=mask.long(), max_new_tokens=c.max_new_tokens,
                               eos_token_id=self.eos_id, pad_token_id=self.pad_id, use_cache=True, **options)
        seqs = []
        for row in out.tolist():                                           # only the new tokens
            seqs.append(row[: row.index(self.eos_id)] if self.eos_id in row else row)
        return seqs

    def predict(self, x: AggregatorOutput, rows: list[Row]) -> list[Row]:
        records = []
        for row, seq in zip(rows, self.generate(x), strict=True):
            text = row.get(self.config.report_column)
            ref = text.strip() if isinstance(text, str) else ""
            records.append({"slide_id": row["slide_id"],
                            "generated": self.tokenizer.decode(seq, skip_special_tokens=True).strip(),
                            "reference": ref, "truncated": bool(ref) and self.encode_report(ref)[1]})
        return records

    # --- metrics --------------------------------------------------------------------------------
    def metrics(self, records: list[Row], *, train_records: list[Row] | None = None) -> dict[str, Any]:
        """Every report metric (``report_metrics``: BLEU, METEOR, ROUGE-L, CIDEr, finding agreement,
        REG2025), truncations, and the constant-report baseline's scores."""
        from milkit.metrics.reports import report_metrics, score_reports

        generated, references = self._texts(records)
        scores = report_metrics(generated, references, self.config)
        scores["n_truncated"] = sum(bool(r.get("truncated")) for r in records)
        baseline = self.target_state.get("most_common_report")
        if baseline and records:  # a model that always writes the commonest training report
            base = score_reports([self._clean(baseline)] * len(records), references, meteor=False)
            keep = ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr")
            scores.update({f"baseline_{k}": v for k, v in base.items() if k in keep})
        return scores

    def validation_metrics(self, records: list[Row]) -> dict[str, Any]:
        """BLEU, ROUGE-L, CIDEr and the overall finding agreement: no METEOR, REG2025 or baseline."""
        from milkit.metrics.reports import report_validation_metrics

        scores = report_validation_metrics(*self._texts(records), self.config)
        scores["n_truncated"] = sum(bool(r.get("truncated")) for r in records)
        return scores

    @classmethod
    def plots(cls, run: "RunView", sink: "PlotSink") -> None:
        """A table of generated vs reference reports with per-report scores."""
        from milkit.viz.task_plots import draw_report_samples

        draw_report_samples(run, sink)

    def _clean(self, text: str) -> str:
        if self.config.score_clean == "none":
            return text
        from milkit.metrics.report_text import clean_report

        return " ".join(clean_report(text).split())  # as `milkit eval-reports` (protocol original) scores

    def _texts(self, records: list[Row]) -> tuple[list[str], list[str]]:
        """Generated and reference reports as they are scored."""
        return [self._clean(r["generated"]) for r in records], [self._clean(r["reference"]) for r in records]
