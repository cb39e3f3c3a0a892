"""``report.html``: one self-contained page per run dir and per compare dir.

Images are embedded as base64 ``data:`` URIs and the CSS is inline, so the file can be
mailed or opened offline. Every text is passed through ``html.escape``. A section that
cannot be built is replaced by a note on the page; writing the report never raises for
a problem inside the run dir.
"""

import base64
import html
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from milkit.atomic import write_text
from milkit.viz import summary
from milkit.viz.rundata import load_splits_summary

log = logging.getLogger("milkit")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;
color:#222;background:#fff}h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ccc;
padding-bottom:.2em;margin-top:1.8em}.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:.6em 0;
font-size:.88em}th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}figure{margin:1em 0}figure img{max-width:100%;height:auto;
border:1px solid #eee}figcaption{color:#555;font-size:.88em;margin-top:.3em}pre{background:#f7f7f7;padding:.8em;
overflow-x:auto;font-size:.85em}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em;margin:.4em 0;
font-size:.9em}.report td{max-width:34em}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def table_html(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells that look numeric are right-aligned."""
    def cell(v: str) -> str:
        numeric = v[:1].isdigit() or v[:1] in "-+" and v[1:2].isdigit()
        return f"<td class=\"num\">{_e(v)}</td>" if numeric else f"<td>{_e(v)}</td>"

    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(str(v)) for v in row) + "</tr>" for row in rows)
    return f"<table class=\"{_e(cls)}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img_html(path: Path, alt: str, caption: str = "") -> str:
    """A figure whose PNG is embedded as a base64 data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{_e(alt)}\">{cap}</figure>"


def notes_html(notes: list[str]) -> str:
    return "".join(f"<div class=\"note\">{_e(n)}</div>" for n in notes)


class _Page:
    """Sections appended in order; a section whose builder fails becomes a note."""

    def __init__(self, title: str, subtitle: str) -> None:
        self.title, self.subtitle = title, subtitle
        self.parts: list[str] = []

    def section(self, title: str, build: Callable[[], str]) -> None:
        try:
            body = build()
        except Exception as exc:  # the rest of the report is still worth writing
            log.warning("report section '%s' failed: %s", title, exc, exc_info=True)
            body = notes_html([f"this section could not be built: {type(exc).__name__}: {exc}"])
        if body:
            self.parts.append(f"<section><h2>{_e(title)}</h2>{body}</section>")

    def write(self, path: Path) -> Path:
        page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(self.title)}</title>"
                f"<style>{CSS}</style></head><body><h1>{_e(self.title)}</h1><p class=\"sub\">{_e(self.subtitle)}</p>"
                + "".join(self.parts) + "</body></html>")
        write_text(path, page)
        return path


def _plots(plots_dir: Path, section: str) -> str:
    index = json.loads((plots_dir / "index.json").read_text())
    parts = []
    for item in index["items"]:
        if item.get("section", "plots") != section:
            continue
        path = plots_dir / item["file"]
        if item["kind"] == "table":  # written by PlotSink.add_table: {"header": [...], "rows": [[...]]}
            table = json.loads(path.read_text())
            body = [[str(cell) for cell in row] for row in table["rows"]]
            parts.append(f"<h3>{_e(item['title'])}</h3><p>{_e(item['caption'])}</p>"
                         + table_html([str(h) for h in table["header"]], body, "report"))
        else:
            parts.append(img_html(path, item["title"], item["caption"]))
    if section == "plots":
        parts.append(notes_html(index.get("notes", [])))
    elif not parts:
        parts.append(notes_html([n for n in index.get("notes", []) if n.startswith("heatmap")] or
                                ["no heatmaps were drawn"]))
    return "".join(parts)


def _data(run_dir: Path, registries: Any) -> str:
    per_fold = load_splits_summary(run_dir)
    parts = []
    if per_fold:
        splits = list(per_fold[0])
        parts.append(table_html(["fold", *[f"{s} slides" for s in splits]],
                                [[str(i), *[str(f.get(s, 0)) for s in splits]] for i, f in enumerate(per_fold)]))
        ids = {s for fold in json.loads((run_dir / "splits.json").read_text())["folds"] for p in fold.values() for s in p}
        stats = summary.patch_stats(run_dir, ids, registries)
        if stats["n"]:
            parts.append(table_html(["slides with features", "patches min", "median", "max", "total"],
                                    [[str(stats["n"]), *(summary.fmt(stats[k]) for k in ("min", "median", "max", "total"))]]))
            parts.append(f"<p>Feature files: <code>{_e(stats['dir'])}</code></p>")
        else:
            parts.append(notes_html([f"no feature files found in {stats['dir']} to count patches"]))
    return "".join(parts)


def _excluded(excluded: list[dict[str, str]] | None) -> str:
    """The slides left out of the run and why ("" when none: no section)."""
    if not excluded:
        return ""
    return (notes_html([f"{len(excluded)} slide(s) of the cohort were left out of training and evaluation "
                        "([cohort] strict = true aborts instead)."])
            + table_html(["slide", "reason"], [[e["slide_id"], e["reason"]] for e in excluded]))


def _recipe(folder: Path) -> str:
    return f"<pre>{_e((folder / 'recipe.toml').read_text())}</pre>"


VIEWER_URL = "http://127.0.0.1:8000"
"""Where report.html looks for a running ``milkit view`` (``MILKIT_VIEW_URL`` or ``viewer_url=`` to change)."""
_PROBE = """(function(){var base=%s,token=%s,bases=[base];
if(location.protocol.indexOf("http")===0&&location.origin!==base)bases.unshift(location.origin);
function show(b){document.querySelectorAll("#milkit-view a[data-slide]").forEach(function(a){
a.href=b+"/slide/"+encodeURIComponent(a.dataset.slide);});var c=document.getElementById("milkit-view-cohort");
c.href=b+"/";c.textContent=b+"/";document.getElementById("milkit-view-links").hidden=false;
document.getElementById("milkit-view-hint").hidden=true;}
function probe(i){if(i>=bases.length)return;fetch(bases[i]+"/api/ping?run="+token).then(function(r){return r.json();})
.then(function(d){if(d.run===null||d.run===undefined)probe(i+1);else show(bases[i]);}).catch(function(){probe(i+1);});}
if(window.fetch)probe(0);})();"""


def _viewer_links(run_dir: Path, viewer_url: str | None) -> str:
    """Links from each slide to its ``milkit view`` page, shown only while a viewer serving this run answers
    ``/api/ping`` (a small inline script asks it); otherwise one line saying how to start one."""
    import os

    from milkit.view.runs import run_token
    from milkit.viz.rundata import case_slides, load_predictions

    base = (viewer_url or os.environ.get("MILKIT_VIEW_URL") or VIEWER_URL).rstrip("/")
    cases = case_slides(run_dir)
    bags = dict.fromkeys(str(r["slide_id"]) for r in load_predictions(run_dir))
    slides = list(dict.fromkeys(s for b in bags for s in cases.get(b, [b])))
    if not slides:
        return ""
    links = " ".join(f"<a data-slide=\"{_e(s)}\">{_e(s)}</a>" for s in slides)
    script = (_PROBE % (json.dumps(base), json.dumps(run_token(run_dir)))).replace("</", "<\\/")
    return (f"<div id=\"milkit-view\"><p id=\"milkit-view-hint\">To open each slide with its attention in a "
            f"deep-zoom viewer, run <code>milkit view {_e(run_dir.resolve())}</code>; links to it appear here while "
            f"it runs at {_e(base)}.</p><div id=\"milkit-view-links\" hidden><p>milkit view is serving this run: "
            f"<a id=\"milkit-view-cohort\"></a> (cohort). Slides with predictions:</p><p>{links}</p></div>"
            f"<script>{script}</script></div>")


def write_run_report(run_dir: Path | str, *, registries: Any = None, viewer_url: str | None = None) -> Path:
    """Write ``RUN/report.html`` (runs :func:`write_run_plots` first if ``RUN/plots`` has no index).
    ``viewer_url``: where the page looks for a running ``milkit view`` (default ``MILKIT_VIEW_URL``, else
    :data:`VIEWER_URL`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "plots" / "index.json").is_file():
        from milkit.viz.run_plots import write_run_plots

        write_run_plots(run_dir, registries=registries)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError) as exc:
        metrics = {"_error": f"metrics.json unreadable: {exc}"}
    name = metrics.get("run") or run_dir.name
    page = _Page(f"milkit run: {name}", f"{metrics.get('aggregator', '?')} + {metrics.get('head', '?')}, "
                 f"{len(metrics.get('folds') or [])} fold(s), {summary.fmt(metrics.get('seconds'))} s, milkit "
                 f"{metrics.get('milkit_version', '?')}; {run_dir.resolve()}; written {time.strftime('%Y-%m-%d %H:%M')}")

    def metrics_section() -> str:
        if "_error" in metrics:
            return notes_html([metrics["_error"]])
        rows, notes = summary.metric_rows(metrics)
        head = ["split", "metric", "value" if len(metrics["folds"]) == 1 else "mean ± std over folds", "95 % CI",
                "per fold"]
        return (f"<p>Monitored metric: <b>{_e(metrics.get('monitor'))}</b> (validation split; test never used for "
                "selection).</p>" + table_html(head, rows) + notes_html(notes))

    page.section("Metrics", metrics_section)
    page.section("Slides left out", lambda: _excluded(metrics.get("excluded_slides")))
    page.section("Plots", lambda: _plots(run_dir / "plots", "plots"))
    page.section("Attention heatmaps", lambda: _plots(run_dir / "plots", "heatmaps"))
    page.section("Slides in milkit view", lambda: _viewer_links(run_dir, viewer_url))
    page.section("Data", lambda: _data(run_dir, registries))
    page.section("Cost", lambda: table_html(["fold", "selected epoch", "epochs", "s / epoch", "peak MiB", "s / slide",
                                             "parameters"], summary.cost_rows(metrics)))
    page.section("Recipe (resolved)", lambda: _recipe(run_dir))
    return page.write(run_dir / "report.html")


def write_compare_report(out_dir: Path | str, *, registries: Any = None) -> Path:
    """Write ``OUT/report.html`` for a ``milkit compare`` folder: table, plot, data, recipe."""
    out_dir = Path(out_dir)
    try:
        table = json.loads((out_dir / "comparison.json").read_text())
    except (OSError, ValueError) as exc:
        table = {"_error": f"comparison.json unreadable: {exc}"}
    page = _Page(f"milkit compare: {out_dir.name}",
                 f"test {table.get('metric', '?')} over {table.get('folds', '?')} folds x "
                 f"{len(table.get('seeds') or [])} seed(s); {out_dir.resolve()}; written {time.strftime('%Y-%m-%d %H:%M')}")

    def comparison() -> str:
        if "_error" in table:
            return notes_html([table["_error"]])
        header, rows = summary.comparison_rows(table)
        best = table.get("best")
        intro = (f"<p>Best by test {_e(table['metric'])} ({_e(table['mode'])}): <b>{_e(best)}</b>. The p-value "
                 "compares each aggregator with the best over paired (fold, seed) runs.</p>")
        png = out_dir / "comparison.png"
        figure = img_html(png, "comparison", f"test {table['metric']}: every run (grey), mean and 95 % CI") \
            if png.is_file() else notes_html(["comparison.png is missing"])
        return intro + table_html(header, rows) + figure

    def curves() -> str:
        from milkit.viz.plots import plot_compare_curves

        png = plot_compare_curves(out_dir, table["metric"], out_dir / "plots" / "compare_curves.png")
        return img_html(png, "validation curves", "Validation curves per aggregator; selection used these, "
                        "never the test split.") if png else notes_html(["no per-epoch validation logs found"])

    page.section("Comparison", comparison)
    page.section("Slides left out", lambda: _excluded(table.get("excluded_slides")))
    if "_error" not in table:
        page.section("Validation curves", curves)
    page.section("Data", lambda: _data(out_dir, registries))
    page.section("Recipe (resolved)", lambda: _recipe(out_dir))
    return page.write(out_dir / "report.html")
