// Inline SVG charts drawn by hand, each with a text alternative: an aria-label summary and a
// button that shows the data as a table.
const NS = "http://www.w3.org/2000/svg";

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

export function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c) e.append(c);
  return e;
}

export const COLOURS = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#9e9d24", "#5d4037"];

function fmtTime(t, span) {
  const d = new Date(t * 1000);
  if (span > 2 * 86400) return `${d.getMonth() + 1}/${d.getDate()} ${String(d.getHours()).padStart(2, "0")}h`;
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// A table of the data behind a chart, hidden until its button is pressed.
function dataTable(caption, head, rows) {
  const id = "t" + Math.random().toString(36).slice(2, 9);
  const table = el("table", {}, el("caption", { text: caption }),
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: i ? "num" : null, text: c }))))));
  const box = el("div", { class: "sr-table", id }, table);
  const btn = el("button", { type: "button", "aria-expanded": "false", "aria-controls": id, text: "Show data table",
    onclick: () => {
      const on = box.classList.toggle("shown");
      btn.setAttribute("aria-expanded", String(on));
      btn.textContent = on ? "Hide data table" : "Show data table";
    } });
  return [btn, box];
}

// Lines (or stacked areas with `stacked`) over time. series: [{name, values:[v|null]}], times: [t].
export function timeChart({ title, times, series, unit = "", stacked = false, width = 560, height = 180, max, fmt = (v) => v }) {
  const L = 62, R = 8, T = 10, B = 22, w = width - L - R, h = height - T - B;
  const n = times.length;
  const t0 = times[0] ?? 0, t1 = times[n - 1] ?? 1, span = Math.max(1, t1 - t0);
  const x = (t) => L + ((t - t0) / span) * w;
  let top = 0;
  const acc = new Array(n).fill(0);
  const layers = series.map((s) => {
    const lo = acc.slice();
    const hi = s.values.map((v, i) => (stacked ? acc[i] + (v ?? 0) : v));
    if (stacked) hi.forEach((v, i) => (acc[i] = v));
    for (const v of hi) if (v !== null && v > top) top = v;
    return { ...s, lo, hi };
  });
  const ymax = max ?? niceMax(top);
  const y = (v) => T + h - (Math.min(v, ymax) / ymax) * h;
  const g = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": `${title}: ${series.map((s) => s.name).join(", ")} over ${n} points; scale 0 to ${fmt(ymax)}${unit}` });
  g.append(svg("title", { text: title }));
  for (let k = 0; k <= 4; k++) {
    const v = (ymax * k) / 4;
    g.append(svg("line", { x1: L, x2: L + w, y1: y(v), y2: y(v), stroke: "#ccc", "stroke-width": 0.5 }),
      svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", text: fmt(v) + unit }));
  }
  for (let k = 0; k <= 4 && n > 1; k++) {
    const t = t0 + (span * k) / 4;
    g.append(svg("text", { x: x(t), y: height - 6, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle", text: fmtTime(t, span) }));
  }
  layers.forEach((s, j) => {
    const colour = s.color ?? COLOURS[j % COLOURS.length];
    const pts = [];
    times.forEach((t, i) => { if (s.hi[i] !== null && s.hi[i] !== undefined) pts.push([x(t), y(s.hi[i]), y(s.lo[i])]); });
    if (!pts.length) return;
    if (stacked) {
      const d = "M" + pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join("L") + "L" +
        pts.slice().reverse().map((p) => `${p[0].toFixed(1)},${p[2].toFixed(1)}`).join("L") + "Z";
      g.append(svg("path", { d, fill: colour, "fill-opacity": 0.75, stroke: colour }));
    } else {
      g.append(svg("path", { d: "M" + pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join("L"), fill: "none", stroke: colour, "stroke-width": 1.6 }));
      if (pts.length === 1) g.append(svg("circle", { cx: pts[0][0], cy: pts[0][1], r: 3, fill: colour }));
    }
  });
  const legend = el("div", { class: "legend" }, series.map((s, j) =>
    el("span", {}, el("i", { style: `background:${s.color ?? COLOURS[j % COLOURS.length]}` }), s.name)));
  const rows = times.map((t, i) => [new Date(t * 1000).toISOString().replace(".000Z", "Z"),
    ...series.map((s) => (s.values[i] === null || s.values[i] === undefined ? "–" : fmt(s.values[i]) + unit))]);
  return el("figure", { class: "chart" }, el("figcaption", { text: title }), g, legend,
    ...dataTable(title, ["time", ...series.map((s) => s.name)], rows));
}

// The service map: a layered graph. nodes: [{id, label, status, region, cause}], links: [{from,to}].
export function graphChart({ title, nodes, links }) {
  const byId = new Map(nodes.map((n) => [n.id, { ...n, layer: 0 }]));
  // Longest path from the services: each node one layer below every node that depends on it.
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const l of links) {
      const a = byId.get(l.from), b = byId.get(l.to);
      if (a && b && b.layer < a.layer + 1 && a.layer + 1 < nodes.length) { b.layer = a.layer + 1; changed = true; }
    }
    if (!changed) break;
  }
  const layers = [];
  for (const n of byId.values()) (layers[n.layer] ??= []).push(n);
  const NW = 120, NH = 34, GX = 26, GY = 60, PAD = 20;
  const widest = Math.max(1, ...layers.map((l) => l?.length ?? 0));
  const width = Math.max(400, PAD * 2 + widest * (NW + GX));
  const height = PAD * 2 + layers.length * (NH + GY);
  layers.forEach((l, li) => {
    if (!l) return;
    l.sort((a, b) => (a.region ?? "").localeCompare(b.region ?? "") || a.label.localeCompare(b.label));
    const row = l.length * (NW + GX) - GX;
    l.forEach((n, i) => { n.x = (width - row) / 2 + i * (NW + GX); n.y = PAD + li * (NH + GY); });
  });
  const g = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-labelledby": "map-title" });
  g.append(svg("title", { id: "map-title", text: title }),
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
      svg("path", { d: "M0,0L10,5L0,10z", fill: "#888" }))));
  // Regions: a box around each region's nodes.
  const regions = new Map();
  for (const n of byId.values()) if (n.region) (regions.get(n.region) ?? regions.set(n.region, []).get(n.region)).push(n);
  for (const [r, ns] of regions) {
    const x0 = Math.min(...ns.map((n) => n.x)) - 8, y0 = Math.min(...ns.map((n) => n.y)) - 16;
    const x1 = Math.max(...ns.map((n) => n.x + NW)) + 8, y1 = Math.max(...ns.map((n) => n.y + NH)) + 8;
    g.append(svg("g", { class: "region-box" }, svg("rect", { class: "region", x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 8 }),
      svg("text", { x: x0 + 6, y: y0 + 11, text: `region ${r}` })));
  }
  for (const l of links) {
    const a = byId.get(l.from), b = byId.get(l.to);
    if (!a || !b) continue;
    g.append(svg("path", { class: "link", d: `M${a.x + NW / 2},${a.y + NH} C${a.x + NW / 2},${a.y + NH + GY / 2} ${b.x + NW / 2},${b.y - GY / 2} ${b.x + NW / 2},${b.y}` }));
  }
  const fill = { ok: "#2e7d32", degraded: "#e08a00", down: "#c62828", unknown: "#757575" };
  for (const n of byId.values()) {
    const label = `${n.label}: ${n.status}${n.cause ? ", suspected root cause" : ""}`;
    const node = svg("g", { class: "node" + (n.cause ? " cause" : ""), "data-id": n.id, "data-status": n.status, tabindex: 0, role: "link", "aria-label": label },
      svg("title", { text: label }),
      svg("rect", { x: n.x, y: n.y, width: NW, height: NH, rx: 5, fill: fill[n.status] ?? fill.unknown }),
      svg("text", { x: n.x + NW / 2, y: n.y + 14, "text-anchor": "middle", style: "fill:#fff;font-weight:bold", text: n.label.length > 18 ? n.label.slice(0, 17) + "…" : n.label }),
      svg("text", { x: n.x + NW / 2, y: n.y + 27, "text-anchor": "middle", style: "fill:#fff", text: n.kind + (n.cause ? " ⚠ cause" : "") }));
    if (n.href) {
      const go = () => { location.hash = n.href; };
      node.addEventListener("click", go);
      node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
    }
    g.append(node);
  }
  const rows = [...byId.values()].map((n) => [n.label, n.kind, n.region ?? "–", n.status, n.cause ? "yes" : "",
    links.filter((l) => l.from === n.id).map((l) => byId.get(l.to)?.label ?? l.to).join(", ")]);
  return el("figure", { class: "chart" }, el("figcaption", { text: title }), g,
    ...dataTable(title, ["node", "kind", "region", "status", "suspected cause", "depends on"], rows));
}
