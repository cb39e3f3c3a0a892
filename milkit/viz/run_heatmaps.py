"""Heatmaps for a few telling test slides of a run (most confident per class, risk extremes)."""

import logging
from pathlib import Path
from typing import Any

from milkit.viz import rundata
from milkit.viz.attention import NoAttentionError, RunScorer, heatmap_for_run

log = logging.getLogger("milkit")


def pick_slides(records: list[dict[str, Any]], n: int = 3) -> list[tuple[str, str]]:
    """(slide_id, why) for ``n`` diverse slides: the most confident slide of each predicted
    class (classification), highest / median / lowest risk (survival), else evenly spaced."""
    task = rundata.task_of(records)
    chosen: list[tuple[str, str]] = []
    if task == "classification":
        def conf(r: dict[str, Any]) -> float:
            return float(r[f"prob_{r['pred']}"])

        ranked = sorted(records, key=conf, reverse=True)
        firsts: dict[str, dict[str, Any]] = {}
        for r in ranked:  # the most confident slide of each predicted class, then the next most confident
            firsts.setdefault(str(r["pred"]), r)
        order = list(firsts.values()) + [r for r in ranked if all(r is not f for f in firsts.values())]
        chosen = [(r["slide_id"], f"true {r['target']}, predicted {r['pred']} (p = {conf(r):.2f})") for r in order]
    elif task == "survival":
        ranked = sorted(records, key=lambda r: float(r["risk"]), reverse=True)
        picks = [(0, "highest"), (len(ranked) // 2, "median"), (len(ranked) - 1, "lowest")]
        for i, what in picks:
            r = ranked[i]
            event = "event" if int(float(r["event"])) else "censored"
            chosen.append((r["slide_id"], f"{what} predicted risk ({float(r['risk']):.3g}); time {r['time']}, {event}"))
    else:
        ranked = sorted(records, key=lambda r: str(r["slide_id"]))
        step = max(1, len(ranked) // max(n, 1))
        chosen = [(r["slide_id"], "sample slide") for r in ranked[::step]]
    out: list[tuple[str, str]] = []
    for sid, why in chosen:
        if sid not in {s for s, _ in out}:
            out.append((sid, why))
    return out[:n]


def write_run_heatmaps(run_dir: Path, index: Any, *, n: int = 3, registries: Any = None, width: int = 900,
                       top_k: int = 4) -> None:
    """Heatmaps of ``n`` fold-0 evaluation slides into ``RUN/plots/heatmaps/``, added to ``index``."""
    records = rundata.load_predictions(run_dir)
    split = rundata.eval_split(records)
    rows = rundata.of_split(records, split, 0) if split else []
    if not rows:
        index.notes.append("heatmaps: no fold-0 test or val predictions to choose slides from")
        return
    scorer = RunScorer(run_dir, fold=0, registries=registries)
    for slide_id, why in pick_slides(rows, n):
        try:
            result = heatmap_for_run(run_dir, slide_id, index.dir / "heatmaps" / f"{slide_id}.png", scorer=scorer,
                                     width=width, top_k=top_k)
        except NoAttentionError as exc:
            index.notes.append(f"heatmaps: none drawn: {exc}")
            return
        except Exception as exc:  # one bad slide must not stop the others
            log.warning("heatmap of %s failed: %s", slide_id, exc, exc_info=True)
            index.notes.append(f"heatmap of {slide_id}: not drawn ({type(exc).__name__}: {exc})")
            continue
        notes = "; ".join(result.notes)
        caption = f"{split} slide {slide_id}: {why}. {result.n_patches:,} patches." + (f" Note: {notes}." if notes else "")
        index.add(result.png, f"Attention: {slide_id}", caption, section="heatmaps")
        if result.tiles_png is not None:
            index.add(result.tiles_png, f"Top and bottom patches: {slide_id}",
                      f"The {len(result.top)} highest and lowest scoring patches, read at level 0.", section="heatmaps")
