// The cohort page: one row per slide, sortable (click a header) and filterable (text, split). Plain DOM, no framework.
"use strict";

const state = {columns: [], rows: [], sortKey: null, sortDir: 1, text: "", split: ""};

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  const {dataset, ...rest} = props || {};
  Object.assign(e, rest);
  Object.assign(e.dataset, dataset || {});
  for (const c of children) e.append(c);
  return e;
}

function show(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  if (typeof v === "boolean") return v ? "yes" : "no";
  return String(v);
}

function splitKeys() { return state.columns.map(c => c.key).filter(k => k === "split" || k.endsWith(" split")); }

function visibleRows() {
  const text = state.text.toLowerCase(), keys = splitKeys();
  let rows = state.rows.filter(r =>
    (!state.split || keys.some(k => r[k] === state.split)) &&
    (!text || state.columns.some(c => show(r[c.key]).toLowerCase().includes(text))));
  if (state.sortKey !== null) {
    const k = state.sortKey, numeric = state.columns.find(c => c.key === k).numeric, d = state.sortDir;
    rows = rows.slice().sort((a, b) => {
      const x = a[k], y = b[k], xe = x === null || x === undefined || x === "", ye = y === null || y === undefined || y === "";
      if (xe || ye) return xe - ye;                       // empty cells last, whatever the direction
      return d * (numeric ? x - y : show(x).localeCompare(show(y), undefined, {numeric: true}));
    });
  }
  return rows;
}

function render() {
  const head = document.querySelector("#cohort thead"), body = document.querySelector("#cohort tbody");
  head.replaceChildren(el("tr", {}, ...state.columns.map(c => {
    const th = el("th", {textContent: c.key, title: "sort by " + c.key});
    if (c.key === state.sortKey) th.className = state.sortDir > 0 ? "asc" : "desc";
    th.addEventListener("click", () => {
      state.sortDir = state.sortKey === c.key ? -state.sortDir : 1;
      state.sortKey = c.key;
      render();
    });
    return th;
  })));
  const rows = visibleRows();
  body.replaceChildren(...rows.map(r => el("tr", {dataset: {slide: r.slide_id}}, ...state.columns.map(c => {
    if (c.key === "slide_id") {
      const a = el("a", {href: "/slide/" + encodeURIComponent(r.slide_id), textContent: r.slide_id});
      const td = el("td", {}, a);
      if (!r.slide_file) td.append(" ", el("span", {className: "nofile", textContent: "(no slide file)"}));
      return td;
    }
    const text = show(r[c.key]);
    return el("td", {textContent: text, title: text.length > 40 ? text : "", className: c.numeric ? "num" : (text.length > 40 ? "text" : "")});
  }))));
  document.getElementById("count").textContent = `${rows.length} of ${state.rows.length} slides`;
}

async function main() {
  const res = await fetch("/api/cohort");
  const data = await res.json();
  if (!res.ok) { document.getElementById("runs").textContent = data.error; return; }
  state.columns = data.columns;
  state.rows = data.rows;
  const runs = document.getElementById("runs");
  runs.replaceChildren();
  if (data.runs) {
    data.layers.forEach((l, i) => {
      if (i) runs.append(" · ");
      runs.append(`${data.layers.length > 1 ? l.label + ": " : ""}${l.name} (${l.aggregator || "?"} + ${l.head || "?"}, ` +
                  `${l.folds.length} trained fold(s)${l.cases ? ", patient-level bags" : ""}) `,
                  el("a", {href: `/runs/${l.index}/files/report.html`, textContent: "report.html"}));
    });
  } else {
    runs.textContent = "feature folders without a run: patches and tissue contours only";
  }
  const splits = new Set();
  for (const r of state.rows) for (const k of splitKeys()) if (r[k]) splits.add(r[k]);
  const select = document.getElementById("split");
  for (const s of ["train", "val", "test", ...[...splits].sort()].filter((s, i, a) => splits.has(s) && a.indexOf(s) === i))
    select.append(el("option", {value: s, textContent: s}));
  select.addEventListener("change", () => { state.split = select.value; render(); });
  document.getElementById("filter").addEventListener("input", e => { state.text = e.target.value; render(); });
  if (!state.rows.length) document.getElementById("note").replaceChildren(el("div", {className: "note", textContent: "no slides found"}));
  render();
  window.milkitCohortReady = true;
}

main();
