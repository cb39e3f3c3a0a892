"""``milkit eval-reports``: JSON/table output, column errors, and reproducing a published results.txt."""

import ast
import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from milkit.commands.eval_reports import register
from milkit.errors import DataError

RUN = "reports/shubhamgp47-histgen-pathology-reports/HistGen4TITAN_1_baseline_Last_Checkpoint"
COLS = ["--pred-col", "Generated Reports", "--ref-col", "Ground Truths"]


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
    res = cli(small_csv, "--pred-col", "gen", "--ref-col", "ref", "--no-meteor", "--json", "--out", out)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data == json.loads(out.read_text())
    assert data["n"] == 2 and data["clean"] == "none"
    # Raw strings share no space-separated token ("Tumor," vs "Tumor", "NA" vs ""): ROUGE-L is 0.
    assert data["scores"]["METEOR"] is None and data["scores"]["ROUGE_L"] == 0.0


def test_histgen_cleaning_makes_raw_text_match_its_cleaned_form(cli, small_csv: Path) -> None:
    res = cli(small_csv, "--pred-col", "gen", "--ref-col", "ref", "--clean", "histgen", "--no-meteor", "--json")
    scores = json.loads(res.stdout)["scores"]
    # Row 1 becomes "tumor grade . present ." on both sides; row 2 is "na ." vs "." (LCS 1: P=1/2, R=1).
    assert scores["ROUGE_L"] == pytest.approx((1.0 + 2.44 * 0.5 / (1 + 1.44 * 0.5)) / 2, rel=1e-12)
    raw = json.loads(cli(small_csv, "--pred-col", "gen", "--ref-col", "ref", "--no-meteor", "--json").stdout)
    assert raw["scores"]["ROUGE_L"] < scores["ROUGE_L"]


def test_table_output(cli, small_csv: Path) -> None:
    res = cli(small_csv, "--pred-col", "gen", "--ref-col", "ref", "--no-meteor")
    assert res.exit_code == 0
    assert "BLEU_4" in res.stdout and "ROUGE_L" in res.stdout and "METEOR n/a" in res.stdout


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
    res = cli(shared_data / RUN / "gen_vs_gt.csv", *COLS, "--clean", "none", "--no-meteor", "--json")
    scores, published = json.loads(res.stdout)["scores"], _published(shared_data)
    assert json.loads(res.stdout)["n"] == 1002
    for key in ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L"):
        assert scores[key] == pytest.approx(published[key], abs=1e-9), key


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")
def test_reproduces_published_meteor(cli, shared_data: Path) -> None:
    res = cli(shared_data / RUN / "gen_vs_gt.csv", *COLS, "--clean", "none", "--json")
    scores, published = json.loads(res.stdout)["scores"], _published(shared_data)
    assert scores["METEOR"] == pytest.approx(published["METEOR"], abs=1e-4)
    assert scores["BLEU_4"] == pytest.approx(published["BLEU_4"], abs=1e-9)
