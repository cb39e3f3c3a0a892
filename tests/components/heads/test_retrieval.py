"""The retrieval report head: exact nearest-neighbour retrieval, consensus, the contrastive losses,
the bank in checkpoints, and a run of recipes/report_retrieval.toml with ``milkit generate`` after it."""

import csv
import json
import math
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

import milkit.metrics.reports
from milkit.aggregator import AggregatorOutput
from milkit.checkpoint import load_weights, save_weights
from milkit.components.aggregators.mean_pool import MeanPool, MeanPoolConfig
from milkit.components.heads.retrieval import Retrieval, RetrievalConfig, contrastive_loss, normalise_report
from milkit.data.bags import collate_bags
from milkit.errors import MilkitError
from milkit.model import Bags, MILModel
from milkit.testing import check_head

REPO = Path(__file__).resolve().parents[3]
REPORTS = {"X": "Tumor of type one. Grade 1.", "Y": "Tumor of type two. Grade 2.", "Z": "Benign lung tissue."}
TRAIN = [  # slide, case, report; a and a2 are one patient
    ("a", "A", "X"), ("a2", "A", "X"), ("b", "B", "Y"), ("c", "C", "Y"), ("d", "D", "Z")]


def _rows(spec=TRAIN) -> list[dict]:
    return [{"slide_id": s, "case_id": c, "report": REPORTS[r]} for s, c, r in spec]


def _unit(*angles_deg: float) -> torch.Tensor:
    a = torch.tensor(angles_deg, dtype=torch.float64).deg2rad()
    return torch.stack([a.cos(), a.sin()], -1).float()                         # n 2


def _head(embeddings: torch.Tensor | None = None, rows: list[dict] | None = None, **keys) -> Retrieval:
    """A head on the raw 2-d embedding (no projection, no centring unless asked), its bank filled with
    ``embeddings`` of ``rows``."""
    rows = rows or _rows()
    config = RetrievalConfig(**{"objective": "none", "proj_dim": 0, "center": False, **keys})
    head = Retrieval(config, in_dim=2, target_state=Retrieval.fit_targets(config, rows)).eval()
    if embeddings is not None:
        head.index_train_split(iter([(AggregatorOutput(embedding=embeddings), rows)]))
    return head


def _generate(head: Retrieval, *queries: torch.Tensor, rows: list[dict] | None = None) -> list[str]:
    rows = rows or [{"slide_id": f"q{i}", "case_id": f"Q{i}"} for i in range(len(queries))]
    return [r["generated"] for r in head.predict(AggregatorOutput(embedding=torch.cat(queries)), rows)]


def _report(key: str) -> str:
    return normalise_report(REPORTS[key], "histgen")


BANK = _unit(0, 1, 90, 135, 180)                                            # a a2 b c d


def test_k1_writes_the_nearest_training_report_by_cosine() -> None:
    head = _head(BANK)
    assert _generate(head, _unit(10), _unit(100), _unit(170), 3 * _unit(-170)) == [
        _report("X"), _report("Y"), _report("Z"), _report("Z")]            # the norm does not matter
    rec = head.predict(AggregatorOutput(embedding=_unit(80)), [{"slide_id": "q", "case_id": "Q"}])[0]
    assert rec["neighbours"] == "b" and rec["similarity"] == pytest.approx(math.cos(math.radians(10)), abs=1e-6)
    assert rec["reference"] == ""                                           # a row without a report (generate)


def test_a_training_slide_never_retrieves_itself_or_its_own_patient() -> None:
    head = _head(BANK)
    rows = [{"slide_id": "a", "case_id": "A", "report": REPORTS["X"]}]
    rec = head.predict(AggregatorOutput(embedding=_unit(0)), rows)[0]
    assert rec["neighbours"] == "b" and rec["generated"] == _report("Y")    # not a, nor a2 (case A)
    assert rec["reference"] == _report("X")


def test_ties_go_to_the_earlier_training_slide() -> None:
    bank = _unit(0, 0, 0, 180, 180)                                          # a, a2, b identical
    assert _generate(_head(bank), _unit(0)) == [_report("X")]
    rows = _rows([("b", "B", "Y"), ("a", "A", "X"), ("a2", "A", "X"), ("c", "C", "Y"), ("d", "D", "Z")])
    assert _generate(_head(bank, rows), _unit(0)) == [_report("Y")]         # b is now first in training order
    hits = _head(bank, rows, k=3).retrieve(AggregatorOutput(embedding=_unit(0)), [{"slide_id": "q"}])[0]
    assert [p for p, _ in hits] == [0, 1, 2]


def test_k_and_vote() -> None:
    bank = _unit(0, 120, 10, 20, 180)               # a (X) nearest to 0°, then b (Y) and c (Y); a2 is far
    assert _generate(_head(bank, k=1), _unit(0)) == [_report("X")]
    assert _generate(_head(bank, k=3, consensus="vote"), _unit(0)) == [_report("Y")]   # Y twice among a, b, c
    assert _generate(_head(bank, k=2, consensus="vote"), _unit(0)) == [_report("X")]   # 1-1: the nearer
    hits = _head(bank, k=3).retrieve(AggregatorOutput(embedding=_unit(0)), [{"slide_id": "q"}])[0]
    assert [p for p, _ in hits] == [0, 2, 3]
    assert [s for _, s in hits] == pytest.approx([1.0, math.cos(math.radians(10)), math.cos(math.radians(20))])


def test_medoid_picks_the_report_closest_to_the_other_retrieved_ones() -> None:
    reports = {"X": "tumor of type one grade one", "Y": "tumor of type one grade two", "Z": "benign lung tissue"}
    rows = [{"slide_id": s, "case_id": c, "report": reports[r]} for s, c, r in
            [("a", "A", "Z"), ("b", "B", "Y"), ("c", "C", "X"), ("d", "D", "Z")]]
    bank = _unit(0, 10, 20, 180)                    # nearest a (Z), then b (Y), then c (X)
    head = _head(bank, rows, k=3, consensus="medoid", clean="none")
    assert _generate(head, _unit(0)) == [reports["Y"]]   # X and Y tie (each other's only match): the nearer, Y
    vec = head.vectors([reports[k] for k in "ZYX"])
    assert float(vec[0] @ vec[1]) == 0.0 and float(vec[1] @ vec[2]) > 0.5
    vote = _head(bank, rows, k=3, consensus="vote", clean="none")
    assert _generate(vote, _unit(0)) == [reports["Z"]]                      # 1-1-1: the nearest


def test_centring_removes_what_every_embedding_shares() -> None:
    offset = torch.tensor([[3.0, 3.0]])                                      # a common part of every embedding
    queries = _unit(*range(0, 360, 15))
    rows = [{"slide_id": f"q{i}"} for i in range(len(queries))]

    def nearest(head: Retrieval, q: torch.Tensor) -> list[str]:
        return [r["neighbours"] for r in head.predict(AggregatorOutput(embedding=q), rows)]

    centred = _head(BANK, center=True)
    assert torch.allclose(centred.center, BANK.mean(0)) and bool(centred.center_set)   # the exact training mean
    assert torch.allclose(centred.bank, torch.nn.functional.normalize(BANK - BANK.mean(0), dim=-1))
    assert nearest(_head(BANK + offset, center=True), queries + offset) == nearest(centred, queries)
    plain = _head(BANK)
    assert nearest(_head(BANK + offset), queries + offset) != nearest(plain, queries)   # cosine alone is not


def test_training_batches_track_a_running_centre() -> None:
    config = RetrievalConfig(proj_dim=0)
    head = Retrieval(config, in_dim=2, target_state=Retrieval.fit_targets(config, _rows())).train()
    first, second = BANK[:2] + 5, BANK[2:] - 5
    head(AggregatorOutput(embedding=first))
    assert torch.allclose(head.center, first.mean(0))                      # the first batch sets it
    head(AggregatorOutput(embedding=second))
    assert torch.allclose(head.center, 0.9 * first.mean(0) + 0.1 * second.mean(0))
    head.eval()
    head(AggregatorOutput(embedding=second))
    assert torch.allclose(head.center, 0.9 * first.mean(0) + 0.1 * second.mean(0))   # eval leaves it


def test_unfilled_rows_are_never_retrieved_and_an_empty_index_is_an_error() -> None:
    head = _head()
    with pytest.raises(MilkitError, match="index is empty.*milkit run"):
        _generate(head, _unit(0))
    rows = _rows()
    head.index_train_split(iter([(AggregatorOutput(embedding=BANK[2:]), rows[2:])]))   # only b, c, d
    assert head.bank_filled.tolist() == [False, False, True, True, True]
    assert _generate(head, _unit(0)) == [_report("Y")]                          # a (0°) is not in the index
    head.index_train_split(iter([]))                                            # a new pass starts afresh
    assert not head.bank_filled.any()


def test_objective_none_needs_no_projection() -> None:
    with pytest.raises(ValidationError, match="proj_dim = 0"):
        RetrievalConfig(objective="none")
    assert RetrievalConfig(objective="none", proj_dim=0).objective == "none"


def test_supcon_loss_on_a_tiny_batch() -> None:
    z, scale = _unit(0, 60, 180), torch.tensor(2.0)
    sim = torch.tensor([[1.0, 1.0, 0.2], [1.0, 1.0, 0.2], [0.2, 0.2, 1.0]])  # slides 0 and 1: the same report
    cos = (z @ z.T).tolist()

    def log_p(i: int, j: int) -> float:
        return scale.item() * cos[i][j] - math.log(sum(math.exp(scale.item() * cos[i][k]) for k in range(3) if k != i))

    expected = -(log_p(0, 1) + log_p(1, 0)) / 2                                 # slide 2 has no positive
    got = contrastive_loss(z, sim, scale, objective="supcon", threshold=1.0, target_temperature=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    lower = contrastive_loss(z, sim, scale, objective="supcon", threshold=0.2, target_temperature=0.1)
    every = -sum(log_p(i, j) for i in range(3) for j in range(3) if j != i) / 6  # all pairs positive, q = 1/2
    assert lower.item() == pytest.approx(every, rel=1e-6)


def test_soft_loss_on_a_tiny_batch() -> None:
    z, scale, tau = _unit(0, 60, 180), torch.tensor(2.0), 0.5
    sim = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
    cos = (z @ z.T).tolist()
    total = 0.0
    for i in range(3):
        others = [j for j in range(3) if j != i]
        zq = sum(math.exp(sim[i, j].item() / tau) for j in others)
        zp = sum(math.exp(scale.item() * cos[i][j]) for j in others)
        total -= sum(math.exp(sim[i, j].item() / tau) / zq * (scale.item() * cos[i][j] - math.log(zp)) for j in others)
    got = contrastive_loss(z, sim, scale, objective="soft", threshold=1.0, target_temperature=tau)
    assert got.item() == pytest.approx(total / 3, rel=1e-6)


def test_a_batch_without_pairs_gives_zero_with_a_graph() -> None:
    for objective in ("supcon", "soft"):
        z = _unit(0).requires_grad_()
        loss = contrastive_loss(z, torch.ones(1, 1), torch.tensor(2.0), objective=objective, threshold=1.0,
                                target_temperature=0.1)
        loss.backward()
        assert loss.item() == 0.0 and z.grad is not None
    z = _unit(0, 90).requires_grad_()                                           # two slides, different reports
    loss = contrastive_loss(z, torch.eye(2), torch.tensor(2.0), objective="supcon", threshold=1.0,
                            target_temperature=0.1)
    assert loss.item() == 0.0


def test_training_forwards_refresh_their_bank_rows_and_eval_forwards_do_not() -> None:
    config = RetrievalConfig(proj_dim=4)
    rows = _rows()
    head = Retrieval(config, in_dim=2, target_state=Retrieval.fit_targets(config, rows))
    x = AggregatorOutput(embedding=BANK[:2])
    head.eval()
    head(x, head.collate_targets(rows[:2]))
    assert not head.bank_filled.any()
    head.train()
    out = head(x, head.collate_targets(rows[:2]))
    assert head.bank_filled.tolist() == [True, True, False, False, False]
    assert torch.equal(head.bank[:2], out.values["embedding"].detach()) and not head.bank.requires_grad
    targets = head.collate_targets([{"slide_id": "new", "report": "x"}])       # not a training slide
    assert targets["bank_index"].tolist() == [-1]


def _model(seed: int = 0, rows: list[dict] | None = None) -> MILModel:
    torch.manual_seed(seed)
    config = RetrievalConfig(proj_dim=4)
    agg = MeanPool(MeanPoolConfig(embed_dim=8), in_dim=6)
    head = Retrieval(config, in_dim=8, target_state=Retrieval.fit_targets(config, rows or _rows()))
    return MILModel(agg, head).eval()


def _bags(lengths: list[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 6, generator=gen), torch.zeros(n, 2)) for n in lengths]


def _index(model: MILModel) -> None:
    with torch.no_grad():
        model.head.index_train_split(iter([(model.encode(collate_bags(_bags([3, 5, 4, 7, 2], 1))), _rows())]))


def test_predictions_do_not_depend_on_padding_or_on_the_other_slides() -> None:
    model = _model()
    _index(model)
    queries = _bags([3, 6], 2)
    rows = [{"slide_id": "q0"}, {"slide_id": "q1"}]
    with torch.no_grad():
        together = model.head.predict(model.encode(collate_bags(queries)), rows)
        alone = model.head.predict(model.encode(collate_bags(queries[:1])), rows[:1])
        feats, mask, coords = collate_bags(queries).feats, collate_bags(queries).mask, collate_bags(queries).coords
        junk = torch.randn(2, 4, 6) * 10 + 5                                    # padding, far from real patches
        padded = Bags(torch.cat([feats, junk], 1), torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1),
                      torch.cat([coords, torch.zeros(2, 4, 2)], 1))
        with_pads = model.head.predict(model.encode(padded), rows)
    assert together[0] == alone[0]
    assert [r["neighbours"] for r in with_pads] == [r["neighbours"] for r in together]
    assert [r["similarity"] for r in with_pads] == pytest.approx([r["similarity"] for r in together], abs=1e-6)


def test_the_bank_is_saved_with_the_checkpoint(tmp_path: Path) -> None:
    model = _model()
    _index(model)
    path = tmp_path / "best.safetensors"
    save_weights(model, path)
    fresh = _model(seed=1)
    assert not fresh.head.bank_filled.any()
    load_weights(fresh, path)
    assert torch.equal(fresh.head.bank, model.head.bank) and fresh.head.bank_filled.all()
    query = collate_bags(_bags([4], 3))
    with torch.no_grad():
        assert fresh.head.predict(fresh.encode(query), [{"slide_id": "q"}]) == \
            model.head.predict(model.encode(query), [{"slide_id": "q"}])
    other = _model(rows=_rows()[:4])                                            # another training split
    with pytest.raises(RuntimeError, match="size mismatch for head.bank"):
        load_weights(other, path)


@pytest.fixture
def no_meteor(monkeypatch: pytest.MonkeyPatch) -> None:
    real = milkit.metrics.reports.score_reports
    monkeypatch.setattr(milkit.metrics.reports, "score_reports", lambda g, r, meteor=True: real(g, r, meteor=False))


def test_metrics_are_the_report_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    head = _head(BANK)
    rows = [{"slide_id": "q0", "report": REPORTS["X"]}, {"slide_id": "q1", "report": REPORTS["Y"]}]
    records = head.predict(AggregatorOutput(embedding=_unit(0, 90)), rows)
    calls = []
    monkeypatch.setattr(milkit.metrics.reports, "report_metrics",
                        lambda g, r, config=None, **parts: calls.append((g, r, config, parts)) or {"BLEU_4": 0.5})
    monkeypatch.setattr(milkit.metrics.reports, "score_reports",
                        lambda g, r, meteor=True: calls.append((g, r, meteor)) or {"BLEU_4": 0.25})
    scores = head.metrics(records)
    assert scores == {"BLEU_4": 0.5, "mean_similarity": 1.0, "baseline_BLEU_4": 0.25}
    (gen, refs, config, parts), (base, base_refs, base_meteor) = calls
    assert gen == [_report("X"), _report("Y")] and refs == base_refs == gen and config is head.config
    assert parts == {} and not base_meteor                                   # every metric, as the report head
    assert base == [head.target_state["most_common_report"]] * 2 == [_report("X")] * 2   # X and Y 2-2: sorted first
    calls.clear()
    assert head.validation_metrics(records) == {"BLEU_4": 0.5, "mean_similarity": 1.0}
    assert [c[3] for c in calls] == [{"meteor": False, "reg2025_score": False}]


NO_MODELS = {"reg2025_keyword_model": "none", "reg2025_embedding_model": "none"}  # never load the REG2025 models


def test_conformance(no_meteor: None) -> None:
    check_head(Retrieval, NO_MODELS)
    check_head(Retrieval, {**NO_MODELS, "objective": "supcon", "positive_threshold": 0.5, "k": 3, "consensus": "vote"})
    # objective = "none" detaches the embedding on purpose: the loss trains only its temperature
    check_head(Retrieval, {**NO_MODELS, "objective": "none", "proj_dim": 0, "k": 2}, skip={"loss and gradients"})


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from milkit.demo import make_demo_cohort

    return make_demo_cohort(tmp_path_factory.mktemp("demo"), n_slides=18, seed=3, slide_size=1024, workers=1,
                            progress=False)


@pytest.mark.slow  # extraction of 18 demo slides, a run, plots and generate: ~20 s on 2 idle cores
def test_the_shipped_recipe_runs_and_generate_retrieves_from_the_run(small_demo: Path, tmp_path: Path,
                                                                     no_meteor: None) -> None:
    from milkit.cli import make_app
    from milkit.plugins import get_plugin_manager

    recipe = tomllib.loads((REPO / "recipes" / "report_retrieval.toml").read_text())
    recipe["cohort"] = {"csv": str(small_demo), "splits": "holdout", "val_fraction": 0.2, "test_fraction": 0.25}
    recipe["train"]["epochs"] = 3
    recipe["head"].update(NO_MODELS)
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(recipe))
    app = make_app(get_plugin_manager(autoload=False))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    predictions = list(csv.DictReader((run_dir / "predictions.csv").open()))
    train_reports = set(json.loads((run_dir / "fold_0" / "target_state.json").read_text())["reports"])
    test = [p for p in predictions if p["split"] == "test"]
    assert test and all(p["generated"] in train_reports and p["neighbours"] for p in test)
    features = small_demo.parent / "features" / "color-texture"
    files = [str(features / f"{p['slide_id']}.h5") for p in test]
    out = tmp_path / "reports.csv"
    result = CliRunner().invoke(app, ["generate", str(run_dir), *sum((["--features", f] for f in files), []),
                                      "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    generated = {r["slide_id"]: r["report"] for r in csv.DictReader(out.open())}
    assert generated == {p["slide_id"]: p["generated"] for p in test}     # the index came with the checkpoint
