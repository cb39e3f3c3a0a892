"""Conformance checks every :class:`milkit.Head` must pass (shared by milkit's and plugins' tests)."""

import json
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from milkit.aggregator import Aggregator, AggregatorOutput
from milkit.config import ComponentConfig
from milkit.head import Head, HeadOutput, Row
from milkit.testing.report import (
    CheckError,
    CheckReport,
    CheckSkip,
    assert_close,
    assert_finite,
    
    json_ready,
    require,
    skip_set,
)
from milkit.testing.synthetic import make_bags, pad_tokens, synthetic_output, synthetic_rows

HEAD_CHECKS = (
    "config",
    "check_rows",
    "fit_targets",
    "build",
    "forward",
    "loss and gradients",
    "predict",
    "metrics",
    "token padding invariance",
    "bf16 autocast",
    "state-dict round trip",
)


def run_head_checks(
    cls: type[Head],
    config: ComponentConfig | dict[str, Any] | None = None,
    *,
    rows: list[Row] | None = None,
    in_dim: int = 16,
    aggregator: Aggregator | None = None,
    atol: float = 1e-5,
    seed: int = 0,
    skip: Collection[str] = (),
) -> CheckReport:
    """Run every head check and return the per-check results; never raises for a failed check.

    Args:
        cls: the head class.
        config: its config (a Config instance or a dict); default ``cls.Config()``.
        rows: cohort rows to train/predict on; default six synthetic rows with ``label``,
            ``time``, ``event`` and ``report`` columns.
        in_dim: embedding width E of the synthetic aggregator output.
        aggregator: if given, the head is ``bind``-ed to it and fed its real outputs
            (``in_dim`` is then ``aggregator.out_dim``).
        atol: tolerance of every equality check (eval mode).
        seed: seed of the synthetic inputs and of the head's initialisation.
        skip: names of checks not to run (reported as skipped), e.g. ``{"metrics"}``.
    """
    label = f"head '{getattr(cls, 'name', '?')}' ({cls.__qualname__})"
    report = CheckReport(label, skip=skip_set(skip, HEAD_CHECKS))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        cfg = report.config(cls, config, HEAD_CHECKS)
        if cfg is None:
            return report
        rows = rows if rows is not None else synthetic_rows(6, gen, cfg)
        report.run("check_rows", lambda: _check_rows(cls, cfg, rows))
        state = report.run("fit_targets", lambda: _fit_targets(cls, cfg, rows))
        if state is None:
            report.skip_rest(list(HEAD_CHECKS[3:]), "fit_targets failed")
            return report
        width = aggregator.out_dim if aggregator is not None else in_dim

        def build(s: int) -> Head:
            torch.manual_seed(s)
            head = cls(cfg, in_dim=width, target_state=state)
            if aggregator is not None:
                head.bind(aggregator)
            return head

        head = report.run("build", lambda: _build(cls, build(seed)))
        if head is None:
            report.skip_rest(list(HEAD_CHECKS[4:]), "the head could not be built")
            return report
        x = _inputs(cls, aggregator, len(rows), width, gen)
        case = _Case(head, rows, x, atol, gen, lambda: build(seed + 1))
        for name, fn in _CHECKS.items():
            report.run(name, lambda fn=fn: fn(case))
    return report


def check_head(
    cls: type[Head],
    config: ComponentConfig | dict[str, Any] | None = None,
    *,
    rows: list[Row] | None = None,
    in_dim: int = 16,
    aggregator: Aggregator | None = None,
    atol: float = 1e-5,
    seed: int = 0,
    skip: Collection[str] = (),
) -> CheckReport:
    """Like :func:`run_head_checks`, but raise :class:`CheckFailure` if any check failed."""
    return run_head_checks(
        cls, config, rows=rows, in_dim=in_dim, aggregator=aggregator, atol=atol, seed=seed, skip=skip
    ).raise_for_failures()


class _Case:
    def __init__(
        self, head: Head, rows: list[Row], x: AggregatorOutput, atol: float, gen: torch.Generator, fresh: Any
    ) -> None:
        self.head, self.rows, self.x, self.atol, self.gen, self.fresh = head, rows, x, atol, gen, fresh

    def values(self, x: AggregatorOutput | None = None, head: Head | None = None) -> dict[str, torch.Tensor]:
        head = head or self.head
        head.eval()
        with torch.no_grad():
            return head(x or self.x, head.collate_targets(self.rows)).values



def _check_rows(cls: type[Head], cfg: ComponentConfig, rows: list[Row]) -> None:
    problems = cls.check_rows(cfg, rows)
    require(isinstance(problems, list), f"check_rows returned {type(problems).__name__}, expected a list of str")
    require(not problems, f"check_rows rejected the test rows: {problems[:3]} (pass rows=... that fit this head)")


def _fit_targets(cls: type[Head], cfg: ComponentConfig, rows: list[Row]) -> dict[str, Any]:
    state = cls.fit_targets(cfg, rows)
    require(isinstance(state, dict), f"fit_targets returned {type(state).__name__}, expected a dict")
    try:
        return json.loads(json.dumps(state))  # the runner saves it as JSON and rebuilds from the file
    except (TypeError, ValueError) as exc:
        raise CheckError(f"fit_targets returned a state that is not JSON-serialisable: {exc}") from None


def _build(cls: type, head: Any) -> Head:
    require(isinstance(head, Head), f"{cls.__qualname__} is not a subclass of milkit.Head")
    return head


def _inputs(
    cls: type[Head], aggregator: Aggregator | None, batch: int, width: int, gen: torch.Generator
) -> AggregatorOutput:
    if aggregator is None:
        return synthetic_output(batch, width, gen, tokens=cls.requires_tokens)
    bags = make_bags([5 - i % 3 for i in range(batch)], aggregator.in_dim, gen)
    aggregator.eval()
    return aggregator(bags.feats, bags.mask, bags.coords)


def _forward(case: _Case) -> None:
    targets = case.head.collate_targets(case.rows)
    require(isinstance(targets, dict) and all(isinstance(v, torch.Tensor) for v in targets.values()),
            "collate_targets must return dict[str, Tensor]")
    case.head.train()
    out = case.head(case.x, targets)
    require(isinstance(out, HeadOutput), f"forward returned {type(out).__name__}, not HeadOutput")
    require(bool(out.values), "forward returned an empty HeadOutput.values")
    for key, value in out.values.items():
        require(isinstance(value, torch.Tensor), f"values['{key}'] is a {type(value).__name__}, not a Tensor")
        require(value.dim() >= 1 and value.shape[0] == len(case.rows),
                f"values['{key}'] has shape {tuple(value.shape)}; its first dim must be the batch ({len(case.rows)})")
        if value.is_floating_point():
            assert_finite(value, f"values['{key}']")


def _loss(case: _Case) -> None:
    head = case.head
    head.train()
    head.zero_grad(set_to_none=True)
    targets = head.collate_targets(case.rows)
    loss = head.loss(head(case.x, targets), targets)
    shape = getattr(loss, "shape", loss)
    require(isinstance(loss, torch.Tensor) and loss.dim() == 0, f"loss must be a scalar tensor, got {shape!r}")
    assert_finite(loss, "loss")
    loss.backward()
    head.eval()
    params = [(n, p) for n, p in head.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    require(not missing, f"no gradient reached {len(missing)} trainable parameter(s): {', '.join(missing[:8])}")
    bad = [n for n, p in params if p.grad is not None and not torch.isfinite(p.grad).all()]
    require(not bad, f"non-finite gradients in: {', '.join(bad[:8])}")
    feeds = [case.x.embedding] + ([case.x.tokens] if type(head).requires_tokens and case.x.tokens is not None else [])
    if all(t.is_leaf for t in feeds):
        require(any(t.grad is not None for t in feeds), "the loss does not depend on the aggregator output")


def _predict(case: _Case) -> list[Row]:
    case.head.eval()
    with torch.no_grad():
        records = case.head.predict(case.x, case.rows)
    got = len(records) if isinstance(records, list) else type(records).__name__
    require(isinstance(records, list) and len(records) == len(case.rows),
            f"predict must return one record per row ({len(case.rows)}), got {got}")
    for row, rec in zip(case.rows, records):
        require(isinstance(rec, dict) and rec.get("slide_id") == row["slide_id"],
                f"record {rec!r} must be a dict with slide_id {row['slide_id']!r}")
    try:
        json_ready(records)
    except (TypeError, ValueError) as exc:
        raise CheckError(f"predict records are not JSON-serialisable: {exc}") from None
    return records


def _metrics(case: _Case) -> None:
    records = _predict(case)
    metrics = case.head.metrics(records, train_records=records)
    require(isinstance(metrics, dict) and all(isinstance(k, str) for k in metrics),
            f"metrics must return dict[str, value], got {type(metrics).__name__}")
    json_ready(metrics)


def _token_padding(case: _Case) -> None:
    if not type(case.head).requires_tokens:
        raise CheckSkip(f"{type(case.head).__name__}.requires_tokens is False")
    if case.x.tokens is None:
        raise CheckSkip("the aggregator output has no tokens")
    a, b = case.values(), case.values(pad_tokens(case.x, 3, case.gen))
    for key in a:
        assert_close(b[key], a[key], f"values['{key}']", case.atol, "when 3 padded tokens were appended")


def _bf16(case: _Case) -> None:
    case.head.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        values = case.head(case.x, case.head.collate_targets(case.rows)).values
    for key, value in values.items():
        if value.is_floating_point():
            assert_finite(value, f"values['{key}']", "under torch.autocast('cpu', dtype=torch.bfloat16)")


def _state_dict(case: _Case) -> None:
    before = case.values()
    fresh = case.fresh()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.safetensors"
        save_model(case.head, str(path))
        load_model(fresh, str(path))
    after = case.values(head=fresh)
    for key in before:
        assert_close(after[key], before[key], f"values['{key}']", case.atol, "after a safetensors round trip")


_CHECKS = {
    "forward": _forward,
    "loss and gradients": _loss,
    "predict": _predict,
    "metrics": _metrics,
    "token padding invariance": _token_padding,
    "bf16 autocast": _bf16,
    "state-dict round trip": _state_dict,
}
