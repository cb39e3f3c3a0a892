"""``milkit eval-reports``: JSON/table output, protocols, findings and REG2025 options, column errors, and
reproducing a published results.txt under ``histgen_protocol``."""

import ast
import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from milkit.commands.eval_reports import register
from milkit.errors import DataError, UsageError

RUN = "reports/shubhamgp47-histgen-pathology-reports/HistGen4TITAN_1_baseline_Last_Checkpoint"
COLS = ["--pred-col", "Generated Reports", "--ref-col", "Ground Truths"]
NO_MODELS = ["--keyword-model", "none", "--embedding-model", "none"]


@pytest.fixture
def cli():
    app = typer.Typer()
    app.callback()(lambda: None)  # keep "eval-reports" a sub-command
    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["eval-reports", *map(str, args)])


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text('id,gen,ref\n1,"Tumor, grade 2. Present",Tumor grade. Present.\n2,NA,\n')
    return path


def test_json_output_and_out_file(cli, small_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    res = cli(small_csv, "--pred-col", "gen", "--ref-col", "ref", "--protocol", "raw", "--no-meteor", *NO_MODELS,
              "--json", "--out", out)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data == json.loads(out.read_text())
    assert data["n"] == 2 and data["protocol"] == "raw"
    # Raw strings share no space-separated token ("Tumor," vs "Tumor", "NA" vs ""): ROUGE-L is 0.
    assert data["scores"]["METEOR"] is None and data["scores"]["ROUGE_L"] == 0.0
    # REG2025 skips the empty reference and, without its models, is None with the reasons
    scores = data["scores"]
    assert scores["REG2025"] is None and scores["REG2025_n"] == 1 and "disabled" in scores["REG2025_unavailable_reason"]
    assert scores["findings_vocabulary"] == "tcga" and "finding_grade_accuracy" in scores


def test_the_original_protocol_cleans_both_columns(cli, small_csv: Path) -> None:
    res = cli(small_csv, "--pred-col", "gen", "--ref-col", "ref", "--no-meteor", "--no-reg2025", "--json")
    data = json.loads(res.stdout)
    scores = data["scores"]
    assert data["protocol"] == "original" and not any(k.startswith("REG2025") for k in scores)
    # Row 1 becomes "tumor grade . present ." on both sides; row 2 is "na ." vs "." (LCS 1: P=1/2, R=1).
    assert scores["ROUGE_L"] == pytest.approx((1.0 + 2.44 * 0.5 / (1 + 1.44 * 0.5)) / 2, rel=1e-12)
    raw = json.loads(cli(small_csv, "--pred-col", "gen", "--ref-col", "ref", "--protocol", "raw", "--no-meteor",
                         "--no-reg2025", "--json").stdout)
    assert raw["scores"]["ROUGE_L"] < scores["ROUGE_L"]


def test_findings_options(cli, tmp_path: Path) -> None:
    path = tmp_path / "demo.csv"
    path.write_text("gen,ref\n\"Small cell carcinoma. Lymphovascular invasion is present.\","
                    "\"Small cell carcinoma. Lymphovascular invasion is not identified.\"\n")
    args = [path, "--pred-col", "gen", "--ref-col", "ref", "--no-meteor", "--no-reg2025", "--json"]
    scores = json.loads(cli(*args, "--findings", "demo").stdout)["scores"]
    assert scores["finding_subtype_accuracy"] == 1.0 and scores["finding_lymphovascular_invasion_accuracy"] == 0.0
    assert not any(k.startswith("finding") for k in json.loads(cli(*args, "--findings", "none").stdout)["scores"])
    res = cli(*args, "--findings", tmp_path / "absent.toml")
    assert isinstance(res.exception, UsageError) and "--findings" in str(res.exception)
    assert "no such file" in str(res.exception)
    res = cli(*args, "--findings", "tgca")
    assert isinstance(res.exception, UsageError) and "'demo', 'tcga', 'none'" in str(res.exception)


def test_table_output(cli, small_csv: Path) -> None:
    res = cli(small_csv, "--pred-col", "gen", "--ref-col", "ref", "--no-meteor", *NO_MODELS)
    assert res.exit_code == 0
    assert "BLEU_4" in res.stdout and "ROUGE_L" in res.stdout and "meteor unavailable" in res.stdout
    assert "REG2025_KEY" in res.stdout and "REG2025 unavailable" in res.stdout and "findings (tcga" in res.stdout


def test_missing_column_lists_the_columns_present(cli, small_csv: Path) -> None:
    res = cli(small_csv, "--pred-col", "generated", "--ref-col", "ref", "--no-meteor")
    assert isinstance(res.exception, DataError)
    assert "'generated'" in str(res.exception) and "'id', 'gen', 'ref'" in str(res.exception)
    res = cli(small_csv.with_name("absent.csv"), "--pred-col", "gen", "--ref-col", "ref")
    assert isinstance(res.exception, DataError) and "no such file" in str(res.exception)


def _published(shared_data: Path) -> dict[str, float]:
    text = (shared_data / RUN / "results.txt").read_text()
    return {k.removeprefix("test_"): v for k, v in ast.literal_eval(text).items()}


def test_reproduces_published_bleu_and_rouge(cli, shared_data: Path) -> None:
    res = cli(shared_data / RUN / "gen_vs_gt.csv", *COLS, "--protocol", "histgen_protocol", "--no-meteor",
              *NO_MODELS, "--json")
    data = json.loads(res.stdout)
    scores, published = data["scores"], _published(shared_data)
    assert data["n"] == 1002 and data["protocol"] == "histgen_protocol"
    for key in ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L"):
        assert scores[key] == pytest.approx(published[key], abs=1e-9), key
    # the REG2025 parts that need no model, as the challenge's eval.py computes them on these strings
    assert scores["REG2025_ROUGE"] == pytest.approx(0.6482, abs=1e-4)
    assert scores["REG2025_BLEU"] == pytest.approx(0.4870, abs=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")
def test_reproduces_published_meteor(cli, shared_data: Path) -> None:
    res = cli(shared_data / RUN / "gen_vs_gt.csv", *COLS, "--protocol", "histgen_protocol", "--no-reg2025",
              "--findings", "none", "--json")
    scores, published = json.loads(res.stdout)["scores"], _published(shared_data)
    assert scores["METEOR"] == pytest.approx(published["METEOR"], abs=1e-4)
    assert scores["BLEU_4"] == pytest.approx(published["BLEU_4"], abs=1e-9)
