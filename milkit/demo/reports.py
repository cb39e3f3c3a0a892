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
    "adenocarcinoma": ("invasive adenocarcinoma with acinar and glandular pattern",),
    "squamous": ("keratinizing squamous cell carcinoma with keratin pearls",),
    "small_cell": ("small cell carcinoma with high grade nuclei and crush artifact",),
}
TUMOUR_PERCENT = ("tumor comprises approximately {p}% of the tissue",)
NECROSIS = {
    "absent": ("no tumor necrosis is identified",),
    "focal": ("focal tumor necrosis is present",),
    "extensive": ("extensive tumor necrosis is present",),
}
LYMPHOCYTES = {
    "mild": ("mild lymphocytic infiltrate",),
    "moderate": ("moderate lymphocytic infiltrate",),
    "brisk": ("brisk lymphocytic infiltrate",),
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
    """One lowercase TCGA-like report (~30-40 words): the slide-derived findings first, then the
    specimen and one staging detail, which vary per patient and cannot be read from the slide.

    Most words come from the findings on purpose: a model that reads the slide can then clearly
    beat one that always writes the commonest training report (the demo's learnability check).
    """

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    diagnosis = pick(DIAGNOSIS[facts.subtype])
    percent = pick(TUMOUR_PERCENT).format(p=facts.tumour_percent)
    necrosis, lymph = pick(NECROSIS[facts.necrosis]), pick(LYMPHOCYTES[facts.lymphocytes])
    specimen = f"specimen: lung, {pick(SITES)}, {pick(PROCEDURES)}"
    detail = pick((f"tumor size {int(rng.integers(2, 6))} cm", pick(MARGINS), pick(INVASION), pick(NODES)))
    return ". ".join([diagnosis, percent, necrosis, lymph, specimen, detail]) + "."
