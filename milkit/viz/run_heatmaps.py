"""Heatmaps for a few telling test slides of a run, chosen by the run's head (``Head.heatmap_slides``)."""

import logging
from pathlib import Path
from typing import Any

from milkit.head import Head
from milkit.viz import rundata
from milkit.viz.attention import NoAttentionError, RunScorer, heatmap_for_run
from milkit.viz.sink import PlotSink

log = logging.getLogger("milkit")


def write_run_heatmaps(run_dir: Path, sink: PlotSink, *, n: int = 3, head: Any = None, registries: Any = None,
                       width: int = 900, top_k: int = 4) -> None:
    """Heatmaps of ``n`` fold-0 evaluation slides into ``RUN/plots/heatmaps/``, added to ``sink``;
   ; ``head`` (the run's head class) picks the slides, else evenly spaced."""
    records = rundata.load_predictions(run_dir)
    split = rundata.eval_split(records)
    rows = rundata.of_split(records, split, 0) if split else []
    if not rows:
        sink.note("heatmaps: no fold-0 test or val predictions to choose slides from")
        return
    scorer = RunScorer(run_dir, fold=0, registries=registries)
    pick = head.heatmap_slides if head is not None else Head.heatmap_slides
    cases = rundata.case_slides(run_dir)
    picks = [(sid, f"{why} (patient {bag}, whose slides are scored one by one)" if bag in cases else why)
             for bag, why in pick(rows, n) for sid in cases.get(bag, [bag])]
    for slide_id, why in picks:
        try:
            result = heatmap_for_run(run_dir, slide_id, sink.dir / "heatmaps" / f"{slide_id}.png", scorer=scorer,
                                     width=width, top_k=top_k)
        except NoAttentionError as exc:
            sink.note(f"heatmaps: none drawn: {exc}")
            return
        except Exception as exc:  # one bad slide must not stop the others
            log.warning("heatmap of %s failed: %s", slide_id, exc, exc_info=True)
            sink.note(f"heatmap of {slide_id}: not drawn ({type(exc).__name__}: {exc})")
            continue
        notes = "; ".join(result.notes)
        caption = f"{split} slide {slide_id}: {why}. {result.n_patches:,} patches." + (f" Note: {notes}." if notes else "")
        sink.add(result.png, f"Attention: {slide_id}", caption, section="heatmaps")
        if result.tiles_png is not None:
            sink.add(result.tiles_png, f"Top and bottom patches: {slide_id}",
                      f"The {len(result.top)} highest and lowest scoring patches, read at level 0.", section="heatmaps")
