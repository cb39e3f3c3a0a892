"""Demo reports: findings buckets, length, phrasing variation, HistGen-cleaner compatibility."""

import numpy as np
import pytest

from milkit.demo.reports import DIAGNOSIS, Findings, findings, write_report


def test_findings_buckets() -> None:
    f = findings("squamous", {"tumour": 0.62, "stroma": 0.2, "lymphocytes": 0.15, "necrosis": 0.0, "fat": 0.03})
    assert f == Findings("squamous", 60, "absent", "brisk")
    f = findings("small_cell", {"tumour": 0.41, "stroma": 0.3, "lymphocytes": 0.02, "necrosis": 0.05, "fat": 0.2})
    assert f == Findings("small_cell", 40, "focal", "mild")
    assert findings("adenocarcinoma", {"tumour": 0.8, "lymphocytes": 0.08, "necrosis": 0.15}).necrosis == "extensive"


def test_reports_state_the_findings_and_vary() -> None:
    rng = np.random.default_rng(0)
    facts = Findings("adenocarcinoma", 60, "extensive", "moderate")
    reports = [write_report(rng, facts) for _ in range(40)]
    assert len(set(reports)) > 30
    for r in reports:
        assert 25 <= len(r.split()) <= 60 and r == r.lower()
        assert "60%" in r and "extensive" in r and "moderate" in r
        assert any(d in r for d in DIAGNOSIS["adenocarcinoma"])


@pytest.mark.parametrize("subtype", list(DIAGNOSIS))
def test_reports_survive_histgen_cleaning(subtype: str) -> None:
    clean_report = pytest.importorskip("milkit.histgen.tokenizer").clean_report
    report = write_report(np.random.default_rng(1), Findings(subtype, 40, "absent", "mild"))
    cleaned = clean_report(report)
    assert "carcinoma" in cleaned and "40" in cleaned and len(cleaned.split()) >= 25
