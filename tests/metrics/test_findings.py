"""Finding agreement: phrase matching, negation, the shipped vocabularies, and per-field scores."""

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from milkit.demo.reports import findings as demo_findings
from milkit.demo.reports import write_report
from milkit.metrics.findings import (
    SHIPPED,
    VocabularyError,
    check_spec,
    extract_findings,
    finding_agreement,
    load_vocabulary,
    macro_f1,
    parse_vocabulary,
)
from milkit.metrics.report_text import clean_report


@pytest.fixture(scope="module")
def tcga():
    return load_vocabulary("tcga")


@pytest.fixture(scope="module")
def demo():
    return load_vocabulary("demo")


def test_shipped_vocabularies_are_package_data() -> None:
    for name in SHIPPED:
        assert resources.files("milkit.metrics").joinpath("vocabularies", f"{name}.toml").is_file()
        vocab = load_vocabulary(name)
        assert vocab.name == name and vocab.fields


@pytest.mark.parametrize(("text", "expected"), [
    # negation before the phrase, after it, and the vocabulary's explicit negative phrases
    ("No lymphovascular invasion is seen.", {"lymphovascular_invasion": "absent"}),
    ("Lymph-Vascular Invasion: Not identified.", {"lymphovascular_invasion": "absent"}),
    ("Lymphovascular invasion: present.", {"lymphovascular_invasion": "present"}),
    ("Lymphovascular invasion is present, no necrosis.", {"lymphovascular_invasion": "present", "necrosis": "absent"}),
    ("lymphovascular invasion not identified perineural invasion present",  # cleaned text: no commas
     {"lymphovascular_invasion": "absent", "perineural_invasion": "present"}),
    ("Perineural invasion: absent", {"perineural_invasion": "absent"}),
    ("Margins negative for carcinoma.", {"margin": "negative"}),
    ("Surgical margins are uninvolved by invasive carcinoma.", {"margin": "negative"}),
    ("The carcinoma does not involve the margin.", {"margin": "negative"}),
    ("Tumor extends to the margin.", {"margin": "positive"}),
    ("Metastatic carcinoma in 3 of 15 lymph nodes (3/15).", {"lymph_nodes": "positive"}),
    ("Metastatic carcinoma in 0 of 12 lymph nodes.", {"lymph_nodes": "negative"}),  # `#` loses to the literal 0
    ("No lymph node metastasis.", {"lymph_nodes": "negative"}),
    # histology: leftmost-longest; a negated histology states nothing
    ("Invasive carcinoma of no special type, grade II (Nuclear grade: 3).",  # "no" inside a phrase is no cue
     {"histology": "invasive_ductal_carcinoma", "grade": "G2"}),
    ("Renal cell carcinoma, clear cell type, Fuhrman nuclear grade 2.",
     {"histology": "clear_cell_renal_cell_carcinoma", "grade": "G2"}),
    ("Non-small cell carcinoma, favor adenocarcinoma.", {"histology": "non_small_cell_carcinoma"}),
    ("Negative for squamous cell carcinoma.", {}),
    ("Prostate, biopsy; No tumor present.", {"histology": "no_tumour"}),
    # [ignore] phrases shadow words that belong to something else
    ("Tubular adenoma with low grade dysplasia.", {"histology": "adenoma"}),
    ("Acinar adenocarcinoma, Gleason's score 7 (3+4), grade group 2.",
     {"histology": "adenocarcinoma", "gleason_score": "3+4=7"}),
    ("Adenocarcinoma, Gleason grade 4+3=7.", {"histology": "adenocarcinoma", "gleason_score": "4+3=7"}),
])
def test_tcga_phrases_and_negation(tcga, text: str, expected: dict[str, str]) -> None:
    assert extract_findings(text, tcga) == expected


def test_the_first_mention_wins_and_cleaning_keeps_findings(tcga) -> None:
    text = "Invasive ductal carcinoma, grade 3 of 3. Ductal carcinoma in situ, grade 2 of 3. Margins: close (1 mm)."
    assert extract_findings(text, tcga) == {"histology": "invasive_ductal_carcinoma", "grade": "G3", "margin": "close"}
    assert extract_findings(clean_report(text), tcga) == extract_findings(text, tcga)
    gleason = "Prostate, biopsy; Acinar adenocarcinoma, Gleason's score 7 (4+3), grade group 3."
    assert extract_findings(clean_report(gleason), tcga) == extract_findings(gleason, tcga) == {
        "histology": "adenocarcinoma", "gleason_score": "4+3=7"}           # cleaned: "gleasons score 7 43"
    # HistGen's cleaner deletes a number before ". " ("grade 3. Ductal" -> "grade . ductal"): the grade is gone
    assert "grade" not in extract_findings(clean_report("Invasive ductal carcinoma, grade 3. Margins close."), tcga)


def test_the_demo_vocabulary_reads_every_demo_report(demo) -> None:
    rng = np.random.default_rng(0)
    details = {"tumour_size_cm", "margin", "lymph_nodes", "lymphovascular_invasion"}
    for i in range(60):
        subtype = ("adenocarcinoma", "squamous", "small_cell")[i % 3]
        comp = {"tumour": rng.uniform(0.1, 0.9), "necrosis": rng.uniform(0, 0.2), "lymphocytes": rng.uniform(0, 0.2)}
        facts = demo_findings(subtype, comp)
        report = write_report(rng, facts)
        for text in (report, " ".join(clean_report(report).split())):
            got = extract_findings(text, demo)
            assert {k: got[k] for k in ("subtype", "tumour_percent", "necrosis", "lymphocytes")} == {
                "subtype": facts.subtype, "tumour_percent": str(facts.tumour_percent),
                "necrosis": facts.necrosis, "lymphocytes": facts.lymphocytes}, text
            assert "site" in got and "procedure" in got and len(details & set(got)) == 1, text
    lvi = "lymphovascular invasion is not identified"
    assert extract_findings(f"adenocarcinoma. {lvi}.", demo) == {"subtype": "adenocarcinoma",
                                                                 "lymphovascular_invasion": "absent"}


def test_macro_f1_by_hand() -> None:
    # a: tp 1, fn 1 (missed as None, which is no class) -> 2/3; b: tp 1 -> 1
    assert macro_f1(["a", "a", "b"], ["a", None, "b"]) == pytest.approx((2 / 3 + 1.0) / 2)
    # a: tp 1, fn 1 -> 2/3; b: tp 1, fp 1 -> 2/3
    assert macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 3)
    # a predicted class absent from the truth scores 0 and counts in the mean
    assert macro_f1(["a"], ["c"]) == 0.0


def test_agreement_skips_fields_the_reference_does_not_state(tcga) -> None:
    refs = ["Adenocarcinoma, grade 2. No lymphovascular invasion.",
            "Squamous cell carcinoma. Lymphovascular invasion present.",
            "Adenocarcinoma."]
    gens = ["Adenocarcinoma, grade 3. Lymphovascular invasion not identified.",
            "Adenocarcinoma.",                                   # LVI not stated: wrong
            "Adenocarcinoma, grade 1. Lymphovascular invasion present."]  # extra fields: not scored
    out = finding_agreement(gens, refs, tcga)
    assert out["findings_vocabulary"] == "tcga"
    assert out["finding_histology_accuracy"] == pytest.approx(2 / 3)
    # histology: adenocarcinoma tp 2 fp 1 -> 4/5; squamous tp 0 fn 1 -> 0
    assert out["finding_histology_macro_f1"] == pytest.approx((4 / 5 + 0) / 2)
    assert out["finding_grade_accuracy"] == 0.0 and out["finding_grade_coverage"] == pytest.approx(1 / 3)
    assert out["finding_lymphovascular_invasion_accuracy"] == 0.5
    assert out["finding_lymphovascular_invasion_coverage"] == pytest.approx(2 / 3)
    assert out["finding_margin_accuracy"] is None and out["finding_margin_coverage"] == 0.0
    assert out["findings_fields_scored"] == 3
    assert out["findings_accuracy"] == pytest.approx((2 / 3 + 0.0 + 0.5) / 3)
    with pytest.raises(ValueError, match="2 generated reports but 3"):
        finding_agreement(gens[:2], refs, tcga)


def _vocab(text: str, tmp_path: Path):
    path = tmp_path / "v.toml"
    path.write_text(text)
    return load_vocabulary(str(path))


def test_a_user_vocabulary_with_wildcards_and_defaults(tmp_path: Path) -> None:
    vocab = _vocab('[fields.size]\nsmall = ["# mm"]\nlarge = ["# cm"]\n'
                   '[fields.lvi]\nyes = ["lvi"]\nno = ["lvi absent"]\n[negated]\nlvi = "no"\n', tmp_path)
    assert vocab.name == "v" and vocab.negation.window == 3  # the default cues apply
    assert extract_findings("Tumour 12 mm. No LVI.", vocab) == {"size": "small", "lvi": "no"}
    assert extract_findings("tumour 3 cm, lvi", vocab) == {"size": "large", "lvi": "yes"}


@pytest.mark.parametrize(("text", "problem"), [
    ('name = 1\n[fields.a]\nx = ["y"]', "name: must be a string"),
    ('colour = "red"\n[fields.a]\nx = ["y"]', "unknown key 'colour'"),
    ('[fields.a]\nx = []', "fields.a.x: must be a non-empty list"),
    ('[fields.a]\nx = ["y"]\ny = ["Y!"]', "fields.a.y: phrase 'Y!' also states 'x'"),
    ('[fields.a]\nx = ["..."]', "has no letters or digits"),
    ('[fields.a]\nx = ["y"]\n[negated]\na = "z"', "negated.a: 'z' is not a value of a (values: x)"),
    ('[fields.a]\nx = ["y"]\n[negated]\nb = "x"', "negated.b: not a field (fields: a)"),
    ('[fields.a]\nx = ["y"]\n[negation]\nwindow = -1', "negation.window: must be an integer >= 0"),
    ('[fields.a]\nx = ["y"]\n[negation]\nafter = "no"', "negation.after: must be a list of strings"),
    ('[fields.a]\nx = ["y"]\n[ignore]\nb = ["z"]', "ignore.b: not a field"),
    ("title = 'x'", "fields: required"),
])
def test_vocabulary_errors_name_the_key(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(VocabularyError, match="not a valid findings vocabulary") as err:
        _vocab(text, tmp_path)
    assert problem in str(err.value) and "v.toml" in str(err.value)


def test_unreadable_vocabularies(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="no such file.*shipped vocabulary \\(demo, tcga\\)"):
        load_vocabulary(str(tmp_path / "absent.toml"))
    with pytest.raises(VocabularyError, match="not a readable TOML file"):
        _vocab("[fields\n", tmp_path)
    assert check_spec("tcga") == "tcga" and check_spec("my/vocab.toml") == "my/vocab.toml"
    with pytest.raises(ValueError, match="'demo', 'tcga', 'none' or the path of a .toml"):
        check_spec("tgca")
    assert parse_vocabulary({"fields": {"a": {"x": ["y"]}}}, source="s", default_name="d").name == "d"
