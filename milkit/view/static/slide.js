// The slide page: one OpenSeadragon viewer per run (synchronised when several), the heatmap as an image layer
// spanning the slide (level-0 aligned), tissue contours on a canvas, top-k patches that fly the viewport, reports.
"use strict";

const slideId = decodeURIComponent(location.pathname.replace(/^\/slide\//, ""));
const api = "/api/slides/" + encodeURIComponent(slideId);
const view = {info: null, panes: [], ready: false, tissue: []};
window.milkitView = view;
const CMAPS = ["jet", "viridis", "magma", "inferno", "coolwarm", "RdYlBu_r", "turbo"];

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  const {dataset, ...rest} = props || {};
  Object.assign(e, rest);
  Object.assign(e.dataset, dataset || {});
  for (const c of children) e.append(c);
  return e;
}
const $ = id => document.getElementById(id);
function show(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  return String(v);
}
function table(obj) {
  return el("table", {}, el("tbody", {}, ...Object.entries(obj).map(([k, v]) =>
    el("tr", {}, el("th", {textContent: k}), el("td", {textContent: show(v), className: typeof v === "number" ? "num" : ""})))));
}
function note(text) { $("note").append(el("div", {className: "note", textContent: text})); }

function settings() {
  return {show: $("show-overlay").checked, opacity: Number($("opacity").value), cmap: $("cmap").value,
          normalise: $("normalise").value, tissue: $("show-tissue").checked};
}

function layerUrl(pane, what) {
  const q = pane.fold === null ? "" : "?fold=" + pane.fold;
  return `/api/runs/${pane.layer.index}/slides/${encodeURIComponent(slideId)}/${what}${q}`;
}

// ---- heatmap layer -------------------------------------------------------------------------------------------

async function loadOverlay(pane) {
  const s = settings();
  if (pane.overlay) { pane.viewer.world.removeItem(pane.overlay); pane.overlay = null; }
  pane.overlayState = "loading";
  pane.status.textContent = "computing the heatmap\u2026";
  const sep = pane.fold === null ? "?" : "&";
  const url = layerUrl(pane, "overlay.png") + `${sep}cmap=${encodeURIComponent(s.cmap)}&normalise=${s.normalise}`;
  const res = await fetch(url);
  if (!res.ok) {
    const err = await res.json().catch(() => ({error: res.statusText}));
    pane.overlayState = "error";
    pane.status.textContent = "no heatmap: " + err.error;
    pane.status.classList.add("error");
    return;
  }
  const blobUrl = URL.createObjectURL(await res.blob());
  pane.viewer.addTiledImage({
    tileSource: {type: "image", url: blobUrl}, x: 0, y: 0, width: 1, opacity: s.show ? s.opacity : 0,
    success: e => {
      pane.overlay = e.item;
      pane.overlayState = "loaded";
      pane.status.textContent = pane.what || "";
      applyOpacity();
    },
    error: () => { pane.overlayState = "error"; pane.status.textContent = "the heatmap image could not be drawn"; },
  });
}

function applyOpacity() {
  const s = settings();
  for (const p of view.panes) if (p.overlay) p.overlay.setOpacity(s.show ? s.opacity : 0);
}

async function loadColourbar() {
  const res = await fetch("/api/colours/" + encodeURIComponent(settings().cmap));
  if (res.ok) $("colourbar").style.background = `linear-gradient(to right, ${(await res.json()).colours.join(", ")})`;
}

// ---- top-k patches -------------------------------------------------------------------------------------------

function flyTo(pane, p) {
  const w0 = view.info.width, pad = p.size * 1.5;
  const rect = new OpenSeadragon.Rect((p.x - pad) / w0, (p.y - pad) / w0, (p.size + 2 * pad) / w0, (p.size + 2 * pad) / w0);
  pane.highlight = p;
  pane.viewer.viewport.fitBounds(rect);
  for (const q of view.panes) drawContours(q);
}

async function loadTop(pane) {
  pane.topk.replaceChildren();
  if (!view.info.has_runs) return;
  const res = await fetch(layerUrl(pane, "top.json") + (pane.fold === null ? "?" : "&") + "k=8");
  if (!res.ok) return;
  const data = await res.json();
  pane.what = `${data.what}, ${data.n_patches.toLocaleString()} patches`;
  if (pane.overlayState === "loaded") pane.status.textContent = pane.what;
  pane.top = data.top;
  pane.topk.append(el("div", {className: "status", textContent: `top ${data.top.length} patches (click to go there):`}));
  data.top.forEach((p, i) => {
    const img = el("img", {src: layerUrl(pane, `top/${i}.jpeg`), alt: `top patch ${i + 1}`, loading: "lazy"});
    const fig = el("figure", {title: `score ${show(p.score)} at (${Math.round(p.x)}, ${Math.round(p.y)})`, dataset: {rank: i}},
                   img, el("figcaption", {textContent: `#${i + 1} ${show(p.score)}`}));
    fig.addEventListener("click", () => {
      pane.topk.querySelectorAll("figure").forEach(f => f.classList.toggle("active", f === fig));
      flyTo(pane, p);
    });
    pane.topk.append(fig);
  });
}

// ---- tissue contours and the highlighted patch, on a canvas above the viewer -------------------------------

function drawContours(pane) {
  const c = pane.canvas, v = pane.viewer, dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (!v.world.getItemCount()) return;
  const w0 = view.info.width;
  const o = v.viewport.pixelFromPoint(new OpenSeadragon.Point(0, 0), true);
  const k = (v.viewport.pixelFromPoint(new OpenSeadragon.Point(1, 0), true).x - o.x) / w0;   // screen px per level-0 px
  const path = ring => ring.forEach(([x, y], i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, o.x + x * k, o.y + y * k));
  if (settings().tissue) {
    ctx.lineWidth = 2;
    for (const polygon of view.tissue) {
      polygon.forEach((ring, i) => {
        ctx.beginPath(); path(ring); ctx.closePath();
        ctx.strokeStyle = i ? "rgba(40,90,230,.9)" : "rgba(0,170,0,.9)";
        ctx.stroke();
      });
    }
  }
  if (pane.highlight) {
    const p = pane.highlight;
    ctx.lineWidth = 3; ctx.strokeStyle = "#ffb000";
    ctx.strokeRect(o.x + p.x * k, o.y + p.y * k, p.size * k, p.size * k);
  }
}

// ---- synchronised viewers ------------------------------------------------------------------------------------

let syncing = false;
function sync(from) {
  if (syncing || view.panes.length < 2) return;
  syncing = true;
  const vp = from.viewer.viewport, zoom = vp.getZoom(), centre = vp.getCenter();
  for (const p of view.panes) if (p !== from && p.viewer.world.getItemCount()) {
    p.viewer.viewport.zoomTo(zoom, null, true);
    p.viewer.viewport.panTo(centre, true);
  }
  syncing = false;
}

// ---- page --------------------------------------------------------------------------------------------------

function makePane(layer, index) {
  const folds = layer.folds || [];
  const pane = {layer, fold: view.info.has_runs ? layer.fold : null, overlay: null, overlayState: "none", top: [], highlight: null};
  const head = el("h2", {textContent: view.info.layers.length > 1 ? `${layer.label}: ${layer.name}` : layer.name});
  if (folds.length > 1) {
    const sel = el("select", {title: "which fold's model draws the heatmap"},
                   ...folds.map(f => el("option", {value: f, textContent: "fold " + f, selected: f === layer.fold})));
    sel.addEventListener("change", () => { pane.fold = Number(sel.value); loadOverlay(pane); loadTop(pane); });
    head.append(" ", sel);
  }
  pane.status = el("div", {className: "status"});
  const osd = el("div", {className: "osd", id: "osd-" + index});
  pane.canvas = el("canvas", {className: "contours"});
  pane.topk = el("div", {className: "topk"});
  $("panes").append(el("div", {className: "pane"}, head, pane.status, el("div", {className: "osd-wrap"}, osd, pane.canvas), pane.topk));
  pane.viewer = OpenSeadragon({
    element: osd, prefixUrl: "/static/openseadragon/images/", tileSources: api + "/slide.dzi",
    showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", maxZoomPixelRatio: 2, visibilityRatio: 0.5,
    animationTime: 0.6, gestureSettingsMouse: {clickToZoom: false}, preserveImageSizeOnResize: true,
  });
  pane.viewer.addOnceHandler("open", () => { loadOverlay(pane); loadTop(pane); pane.opened = true; checkReady(); });
  pane.viewer.addHandler("update-viewport", () => drawContours(pane));
  pane.viewer.addHandler("viewport-change", () => sync(pane));
  return pane;
}

function checkReady() { view.ready = view.panes.length > 0 && view.panes.every(p => p.opened); }

function details(info) {
  const box = $("details");
  for (const layer of info.layers) {
    if (!info.has_runs) break;
    const sec = el("section", {}, el("h2", {textContent: (info.layers.length > 1 ? layer.label + ": " : "") + "prediction" +
                                                  (layer.case_id ? ` (patient ${layer.case_id})` : "")}));
    const r = layer.report;                 // report runs: split and fold here, the rest beside the reports below
    const fields = Object.fromEntries(Object.entries(layer.fields).filter(([k]) => r ? ["split", "fold"].includes(k) : k !== "generated"));
    sec.append(Object.keys(fields).length ? table(fields) : el("p", {textContent: "no prediction for this slide"}));
    if (r) {
      sec.append(el("h2", {textContent: "reports"}),
        el("div", {className: "reports"},
           el("div", {className: "generated"}, el("b", {textContent: "generated"}), el("pre", {className: "report", textContent: r.generated})),
           el("div", {className: "reference"}, el("b", {textContent: "reference"}), el("pre", {className: "report", textContent: r.reference}))));
      if (Object.keys(r.scores).length) sec.append(el("b", {textContent: "per-report scores"}), table(r.scores));
      if (Object.keys(r.fields).length) sec.append(el("b", {textContent: "other fields"}), table(r.fields));
    }
    box.append(sec);
  }
}

async function main() {
  const res = await fetch(api);
  const info = await res.json();
  if (!res.ok) { $("title").textContent = slideId; note(info.error); return; }
  info.has_runs = info.layers.some(l => l.label !== "patches");
  view.info = info;
  document.title = "milkit view: " + slideId;
  $("title").textContent = slideId;
  $("meta").textContent = `${info.width.toLocaleString()} x ${info.height.toLocaleString()} px` +
    (info.mpp ? `, ${info.mpp.toPrecision(3)} \u00b5m/px` : "") + (info.file ? `, ${info.file} (${info.backend})` : "");
  if (info.note) note(info.note);
  for (const c of CMAPS) $("cmap").append(el("option", {value: c, textContent: c}));
  view.panes = info.layers.map(makePane);
  $("show-overlay").addEventListener("change", applyOpacity);
  $("opacity").addEventListener("input", applyOpacity);
  $("cmap").addEventListener("change", () => { loadColourbar(); view.panes.forEach(loadOverlay); });
  $("normalise").addEventListener("change", () => view.panes.forEach(loadOverlay));
  $("show-tissue").addEventListener("change", () => view.panes.forEach(drawContours));
  loadColourbar();
  details(info);
  const t = await fetch(api + "/tissue.json");
  if (t.ok) {
    const data = await t.json();
    view.tissue = data.polygons;
    if (!data.source) $("show-tissue").parentElement.title = "no tissue contours: the extraction's segmentation GeoJSON was not found";
    view.panes.forEach(drawContours);
  }
}

main();
