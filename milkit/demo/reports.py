"""Templated pathology reports for demo cases, derived from the case's true tissue composition.

Slide-derived findings (subtype, tumour percentage bucket, necrosis, lymphocytic infiltrate)
are what a report-generation model can learn from the pixels; specimen site, procedure, size,
margins and nodes are patient-level variation it cannot. Phrasing variants reuse the same words, so that the
vocabulary stays small and most words pass HistGen's minimum-frequency threshold (10) even in
the ~40 training reports of the 60-slide demo.
"""

from dataclasses import dataclass

import numpy as np

DIAGNOSIS: dict[str, tuple[str, ...]] = {
    "adenocarcinoma": ("invasive adenocarcinoma, acinar pattern", "adenocarcinoma, acinar pattern"),
    "squamous": ("invasive squamous cell carcinoma, keratinizing", "keratinizing squamous cell carcinoma"),
    "small_cell": ("small cell carcinoma, high grade", "high grade small cell carcinoma"),
}
TUMOUR_PERCENT = ("tumor comprises approximately {p}% of the tissue", "tumor is approximately {p}% of the tissue")
NECROSIS = {
    "absent": ("no tumor necrosis is identified", "tumor necrosis is not identified"),
    "focal": ("focal tumor necrosis is present", "tumor necrosis is focal"),
    "extensive": ("extensive tumor necrosis is present", "tumor necrosis is extensive"),
}
LYMPHOCYTES = {
    "mild": ("mild lymphocytic infiltrate", "lymphocytic infiltrate is mild"),
    "moderate": ("moderate lymphocytic infiltrate", "lymphocytic infiltrate is moderate"),
    "brisk": ("brisk lymphocytic infiltrate", "lymphocytic infiltrate is brisk"),
}
SITES = ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe")
PROCEDURES = ("lobectomy", "wedge resection", "biopsy")
MARGINS = ("margins are free of tumor", "tumor is close to the margin", "tumor extends to the margin")
NODES = ("lymph nodes are negative for tumor", "metastatic carcinoma in lymph nodes")
INVASION = ("lymphovascular invasion is not identified", "lymphovascular invasion is present")


@dataclass(frozen=True)
class Findings:
    """Report-relevant facts about one case."""

    subtype: str
    tumour_percent: int
    necrosis: str
    lymphocytes: str


def findings(subtype: str, composition: dict[str, float]) -> Findings:
    """Bucket a composition (fractions of tissue) into report findings."""
    tumour = int(np.clip(round(composition["tumour"] * 5) * 20, 20, 80))  # 20/40/60/80: few, frequent words
    nec = composition["necrosis"]
    necrosis = "absent" if nec < 0.01 else "focal" if nec < 0.1 else "extensive"
    lym = composition["lymphocytes"]
    lymphocytes = "mild" if lym < 0.05 else "moderate" if lym < 0.12 else "brisk"
    return Findings(subtype, tumour, necrosis, lymphocytes)


def write_report(rng: np.random.Generator, facts: Findings) -> str:
    """One lowercase TCGA-like report (~30-50 words) with random phrasing and patient details."""

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    specimen = f"lung, {pick(SITES)}, {pick(PROCEDURES)}"
    diagnosis = pick(DIAGNOSIS[facts.subtype])
    percent = pick(TUMOUR_PERCENT).format(p=facts.tumour_percent)
    necrosis, lymph = pick(NECROSIS[facts.necrosis]), pick(LYMPHOCYTES[facts.lymphocytes])
    size = f"tumor size {int(rng.integers(2, 6))} cm"
    details = [size, pick(MARGINS), pick(INVASION), pick(NODES)]
    if rng.random() < 0.5:
        sentences = [specimen, diagnosis, percent, necrosis, lymph, *details]
    else:
        sentences = [f"{specimen}, {diagnosis}", lymph, necrosis, percent, *details]
    if rng.random() < 0.3:  # some reports omit the staging details
        sentences = sentences[: len(sentences) - int(rng.integers(1, 3))]
    return ". ".join(sentences) + "."
