"""Build the demo cohort on disk: slides, ``cohort.csv`` (labels, survival, reports, slide-level
tissue targets), ``composition.csv``.

Survival and reports are case-level (as in TCGA) and derived from the case's measured tissue
composition, averaged over its slides; ``tumour_fraction``, ``necrosis`` and ``til`` are what each
slide itself shows (its measured composition, bucketed as the reports bucket it). Every file is written atomically and ``.complete`` is
written last, so a directory without it is an interrupted generation.
"""

import csv
import io
import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from milkit.atomic import write_text
from milkit.demo.plan import plan_cohort
from milkit.demo.reports import findings, write_report
from milkit.demo.slides import MPP, SlidePlan, init_worker, synthesise_slide
from milkit.demo.tissue import COMPONENTS
from milkit.errors import DataError

VERSION = "demo-v3"
COHORT_COLUMNS = ("slide_id", "case_id", "slide_path", "label", "time", "event", "report",
                  "tumour_fraction", "necrosis", "til")
COMPOSITION_COLUMNS = ("slide_id", "case_id", "label", *COMPONENTS, "width", "height", "mpp")
SUBTYPE_LOG_HAZARD = {"adenocarcinoma": 0.0, "squamous": 0.5, "small_cell": 1.3}
CENSORED_FRACTION = 0.3
MARKER = ".complete"


def log_hazard(subtype: str, composition: dict[str, float]) -> float:
    """Cox log-hazard of a case: subtype, more necrosis and less lymphocytic infiltrate are worse."""
    return (
        SUBTYPE_LOG_HAZARD[subtype]
        + 4.0 * composition["necrosis"]
        - 5.0 * composition["lymphocytes"]
        + 1.0 * (composition["tumour"] - 0.55)
    )


def survival(rng: np.random.Generator, log_hazards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weibull survival times (months, > 0) under proportional hazards; 30% of cases censored.

    Returns:
        ``time`` float [n] and ``event`` int [n] (1 = death observed, 0 = censored).
    """
    n = len(log_hazards)
    time = 30.0 * (-np.log(rng.random(n)) / np.exp(log_hazards)) ** (1 / 1.3)
    event = np.ones(n, dtype=np.int64)
    censored = rng.permutation(n)[: round(CENSORED_FRACTION * n)]
    time[censored] *= rng.uniform(0.15, 0.9, len(censored))  # lost to follow-up before the event
    event[censored] = 0
    return np.maximum(np.round(time, 1), 0.1), event


def make_demo_cohort(
    out_dir: Path,
    *,
    n_slides: int = 60,
    seed: int = 0,
    progress: bool = True,
    slide_size: int | None = None,
    workers: int | None = None,
) -> Path:
    """Generate the synthetic demo cohort into ``out_dir``; the same arguments give identical bytes.

    Args:
        out_dir: Target folder; gets ``slides/<slide_id>.tiff``, ``cohort.csv``, ``composition.csv``.
        n_slides: Number of slides (≥ 1).
        seed: Cohort seed.
        progress: Show a progress bar on stderr.
        slide_size: Fixed level-0 side in pixels (fast tests); default varies 2,000-3,500 px.
        workers: Rendering processes; default: up to 8, limited by the CPUs available.

    Returns:
        Path of ``cohort.csv`` (slide paths in it are relative to its folder).
    """
    if n_slides < 1:
        raise DataError(f"the demo needs at least 1 slide, got n_slides={n_slides}")
    out_dir = Path(out_dir)
    slides_dir = out_dir / "slides"
    slides_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).unlink(missing_ok=True)
    cases = plan_cohort(n_slides, seed, slide_size=slide_size)
    plans = [s for case in cases for s in case.slides]
    comps = dict(zip([p.slide_id for p in plans], _render(plans, slides_dir, workers, progress), strict=True))

    report_rng, survival_rng = np.random.default_rng([seed, 2]), np.random.default_rng([seed, 3])
    case_comps = [
        {c: float(np.mean([comps[s.slide_id][c] for s in case.slides])) for c in COMPONENTS} for case in cases
    ]
    reports = [write_report(report_rng, findings(case.subtype, cc)) for case, cc in zip(cases, case_comps, strict=True)]
    hazards = np.array([log_hazard(case.subtype, cc) for case, cc in zip(cases, case_comps, strict=True)])
    times, events = survival(survival_rng, hazards)

    cohort, composition = [], []
    for i, case in enumerate(cases):
        for s in case.slides:
            path = f"slides/{s.slide_id}.tiff"
            seen = findings(case.subtype, comps[s.slide_id])  # this slide's own necrosis and infiltrate
            cohort.append([s.slide_id, case.case_id, path, case.subtype, f"{times[i]:.1f}", int(events[i]), reports[i],
                           f"{comps[s.slide_id]['tumour']:.4f}", "absent" if seen.necrosis == "absent" else "present",
                           seen.lymphocytes])
            fractions = [f"{comps[s.slide_id][c]:.4f}" for c in COMPONENTS]
            composition.append([s.slide_id, case.case_id, case.subtype, *fractions, s.width, s.height, MPP])
    _write_csv(out_dir / "composition.csv", COMPOSITION_COLUMNS, composition)
    _write_csv(out_dir / "cohort.csv", COHORT_COLUMNS, cohort)
    params = {"version": VERSION, "n_slides": n_slides, "seed": seed, "slide_size": slide_size}
    _write_atomic(out_dir / MARKER, json.dumps(params, sort_keys=True) + "\n")
    return out_dir / "cohort.csv"


def is_complete(out_dir: Path, *, n_slides: int = 60, seed: int = 0, slide_size: int | None = None) -> bool:
    """Whether ``out_dir`` holds a finished generation made with exactly these arguments."""
    try:
        params = json.loads((Path(out_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    want = {"version": VERSION, "n_slides": n_slides, "seed": seed, "slide_size": slide_size}
    return params == want and (Path(out_dir) / "cohort.csv").is_file()


def _render(plans: Sequence[SlidePlan], slides_dir: Path, workers: int | None, progress: bool) -> list[dict]:
    """Synthesise every slide, in worker processes when more than one is useful; results in plan order."""
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)), 8)
    workers = max(1, min(workers, len(plans)))
    results: list[dict | None] = [None] * len(plans)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("synthesising demo slides", total=len(plans))
        if workers == 1:
            for i, plan in enumerate(plans):
                results[i] = synthesise_slide(plan, slides_dir / f"{plan.slide_id}.tiff")
                bar.advance(task)
        else:
            # forkserver, not fork: forking a process whose torch/OpenCV thread pools are running can
            # deadlock the children (seen: a test session hung here). Scripts that call this at top
            # level need the usual `if __name__ == "__main__":` guard, as with any process pool.
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            ctx = multiprocessing.get_context(method)
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker) as pool:
                futures = {
                    pool.submit(synthesise_slide, plan, slides_dir / f"{plan.slide_id}.tiff"): i
                    for i, plan in enumerate(plans)
                }
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.advance(task)
    return [r for r in results if r is not None]


def _write_csv(path: Path, header: Sequence[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _write_atomic(path, buffer.getvalue())


def _write_atomic(path: Path, text: str) -> None:
    write_text(path, text)
